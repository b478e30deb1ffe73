package rules

import (
	"fmt"
	"log/slog"
	"maps"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

// LoadOptions says how rule files become groups.
type LoadOptions struct {
	// Interval is the evaluation interval of groups that set none (Prometheus's
	// global.evaluation_interval). Zero means one minute.
	Interval time.Duration
	// ExternalLabels are handed to templates as $externalLabels.
	ExternalLabels labels.Labels
	// ExternalURL is handed to templates as $externalURL.
	ExternalURL string
	// IgnoreUnknownFields accepts rule files with fields rulefmt does not know.
	IgnoreUnknownFields bool
	// Parser parses the expressions; nil means the default PromQL parser.
	Parser parser.Parser
	// Logger receives rulefmt's warnings and template expansion warnings; nil discards.
	Logger *slog.Logger
}

func (o *LoadOptions) parser() parser.Parser {
	if o.Parser == nil {
		return parser.NewParser(parser.Options{})
	}
	return o.Parser
}

func (o *LoadOptions) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

// LoadFiles parses and validates the rule files (Prometheus's format, with the prometheus
// module's rulefmt) and builds their groups, in file order and group order. Any error in
// any file fails the whole load, as in Prometheus: the errors name the file and, where
// rulefmt knows it, the line.
func LoadFiles(files []string, o LoadOptions) ([]*Group, []error) {
	p := o.parser()
	logger := o.logger()
	interval := o.Interval
	if interval <= 0 {
		interval = time.Minute
	}
	var groups []*Group
	for _, fn := range files {
		rgs, errs := rulefmt.ParseFile(fn, o.IgnoreUnknownFields, model.UTF8Validation, p, logger)
		if errs != nil {
			return nil, errs
		}
		for _, rg := range rgs.Groups {
			itv := interval
			if rg.Interval != 0 {
				itv = time.Duration(rg.Interval)
			}
			rules := make([]Rule, 0, len(rg.Rules))
			for _, r := range rg.Rules {
				expr, err := p.ParseExpr(r.Expr)
				if err != nil {
					return nil, []error{fmt.Errorf("%s: %w", fn, err)}
				}
				lset := fromMaps(rg.Labels, r.Labels)
				if r.Alert != "" {
					rules = append(rules, newAlertingRule(r.Alert, expr, time.Duration(r.For), time.Duration(r.KeepFiringFor),
						lset, labels.FromMap(r.Annotations), o.ExternalLabels, o.ExternalURL, logger.With("alert", r.Alert)))
					continue
				}
				rules = append(rules, newRecordingRule(r.Record, expr, lset))
			}
			var qo time.Duration
			if rg.QueryOffset != nil {
				qo = time.Duration(*rg.QueryOffset)
			}
			groups = append(groups, newGroup(rg.Name, fn, itv, qo, rg.Limit, rules))
		}
	}
	return groups, nil
}

// fromMaps returns sorted labels from the maps, later ones overriding earlier ones
// (Prometheus's rules.FromMaps).
func fromMaps(ms ...map[string]string) labels.Labels {
	all := map[string]string{}
	for _, m := range ms {
		maps.Copy(all, m)
	}
	return labels.FromMap(all)
}

// newGroup builds a group of rules; its evaluation state starts empty.
func newGroup(name, file string, interval, queryOffset time.Duration, limit int, rules []Rule) *Group {
	g := &Group{
		name:                 name,
		file:                 file,
		interval:             interval,
		queryOffset:          queryOffset,
		limit:                limit,
		rules:                rules,
		seriesInPreviousEval: make([]map[string]labels.Labels, len(rules)),
		reads:                readSet{names: map[string]struct{}{}},
	}
	for _, r := range rules {
		g.reads.add(r.Query())
	}
	g.sched.init()
	return g
}
