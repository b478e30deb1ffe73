package rules

import (
	"sync"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// Health is a rule's health after its last evaluation, as the Prometheus API spells it.
type Health string

// The health values of the Prometheus API.
const (
	HealthUnknown Health = "unknown"
	HealthGood    Health = "ok"
	HealthBad     Health = "err"
)

// RuleStatus is the outcome of a rule's last evaluation.
type RuleStatus struct {
	Health Health
	// LastError is the last evaluation's error: a query error, a duplicate label
	// set, an exceeded limit, a failed write, or a template that did not expand.
	LastError error
	// EvalError is LastError without template errors: what fails a promtool test.
	EvalError      error
	LastEvaluation time.Time
	EvaluationTime time.Duration
}

// ruleStatus is a RuleStatus behind a mutex.
type ruleStatus struct {
	mu sync.Mutex
	s  RuleStatus
}

func (s *ruleStatus) get() RuleStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.s
	if st.Health == "" {
		st.Health = HealthUnknown
	}
	return st
}

func (s *ruleStatus) set(evalErr, tmplErr error, start time.Time, took time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.s.EvalError = evalErr
	s.s.LastError = evalErr
	if s.s.LastError == nil {
		s.s.LastError = tmplErr
	}
	s.s.Health = HealthGood
	if s.s.LastError != nil {
		s.s.Health = HealthBad
	}
	s.s.LastEvaluation = start
	s.s.EvaluationTime = took
}

// Rule is an *AlertingRule or a *RecordingRule.
type Rule interface {
	// Name is the alert name or the recorded metric name.
	Name() string
	// Labels are the group's and the rule's labels, merged.
	Labels() labels.Labels
	// Query is the rule's expression.
	Query() parser.Expr
	// Status is the outcome of the last evaluation.
	Status() RuleStatus

	ruleStatus() *ruleStatus
}
