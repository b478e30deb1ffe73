package rules

import (
	"context"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	promrules "github.com/prometheus/prometheus/rules"
)

// RecordingRule is a recording rule: Prometheus's own, for exact semantics (metric
// name and labels override, duplicate label sets, limit), with Vigil's status.
type RecordingRule struct {
	name   string
	expr   parser.Expr
	labels labels.Labels
	prom   *promrules.RecordingRule
	status ruleStatus
}

func newRecordingRule(name string, expr parser.Expr, lset labels.Labels) *RecordingRule {
	return &RecordingRule{name: name, expr: expr, labels: lset, prom: promrules.NewRecordingRule(name, expr, lset)}
}

// Name returns the recorded metric name.
func (r *RecordingRule) Name() string { return r.name }

// Query returns the rule's expression.
func (r *RecordingRule) Query() parser.Expr { return r.expr }

// Labels returns the labels set on the recorded series.
func (r *RecordingRule) Labels() labels.Labels { return r.labels }

// Status returns the outcome of the rule's last evaluation.
func (r *RecordingRule) Status() RuleStatus { return r.status.get() }

func (r *RecordingRule) ruleStatus() *ruleStatus { return &r.status }

func (r *RecordingRule) eval(ctx context.Context, queryOffset time.Duration, ts time.Time, query promrules.QueryFunc, limit int) (promql.Vector, error) {
	return r.prom.Eval(ctx, queryOffset, ts, query, nil, limit)
}
