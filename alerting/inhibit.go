package alerting

import (
	"time"

	amalert "github.com/prometheus/alertmanager/alert"
	amcommoncfg "github.com/prometheus/alertmanager/config/common"
	amlabels "github.com/prometheus/alertmanager/pkg/labels"
	"github.com/prometheus/common/model"
)

// inhibitRule is one inhibit_rules entry: a firing source alert mutes target alerts
// whose `equal` labels have the same values, as Alertmanager's inhibitor does.
type inhibitRule struct {
	source, target amlabels.Matchers
	equal          []model.LabelName
}

func newInhibitRule(cr amcommoncfg.InhibitRule) *inhibitRule {
	r := &inhibitRule{}
	for ln, lv := range cr.SourceMatch {
		r.source = append(r.source, &amlabels.Matcher{Type: amlabels.MatchEqual, Name: ln, Value: lv})
	}
	for ln, lv := range cr.SourceMatchRE {
		if m, err := amlabels.NewMatcher(amlabels.MatchRegexp, ln, lv.String()); err == nil {
			r.source = append(r.source, m)
		}
	}
	r.source = append(r.source, cr.SourceMatchers...)
	for ln, lv := range cr.TargetMatch {
		r.target = append(r.target, &amlabels.Matcher{Type: amlabels.MatchEqual, Name: ln, Value: lv})
	}
	for ln, lv := range cr.TargetMatchRE {
		if m, err := amlabels.NewMatcher(amlabels.MatchRegexp, ln, lv.String()); err == nil {
			r.target = append(r.target, m)
		}
	}
	r.target = append(r.target, cr.TargetMatchers...)
	for _, ln := range cr.Equal {
		r.equal = append(r.equal, model.LabelName(ln))
	}
	return r
}

// inhibitSources holds, per inhibit rule, the alerts firing at one instant that
// match the rule's source side: computed once per flush, then checked per alert.
type inhibitSources [][]inhibitSource

type inhibitSource struct {
	fp       model.Fingerprint
	labels   model.LabelSet
	isTarget bool // also matches the rule's target side
}

// sourcesAt collects the inhibiting alerts of every rule among all at now (resolved
// alerts inhibit nothing).
func sourcesAt(rules []*inhibitRule, all map[model.Fingerprint]*amalert.Alert, now time.Time) inhibitSources {
	out := make(inhibitSources, len(rules))
	for fp, a := range all {
		if a.ResolvedAt(now) {
			continue
		}
		for i, r := range rules {
			if r.source.Matches(a.Labels) {
				out[i] = append(out[i], inhibitSource{fp: fp, labels: a.Labels, isTarget: r.target.Matches(a.Labels)})
			}
		}
	}
	return out
}

// inhibited reports whether lset is muted by a rule, and by which alert. An alert
// matching both sides of a rule is not inhibited by alerts that also match both
// sides, exactly as in Alertmanager, so that such alerts do not mute each other. A
// label in `equal` missing on both sides counts as equal, as there.
func (srcs inhibitSources) inhibited(rules []*inhibitRule, lset model.LabelSet) (model.Fingerprint, bool) {
	for i, r := range rules {
		if len(srcs[i]) == 0 || !r.target.Matches(lset) {
			continue
		}
		twoSided := r.source.Matches(lset)
		for _, src := range srcs[i] {
			if twoSided && src.isTarget {
				continue
			}
			eq := true
			for _, ln := range r.equal {
				if src.labels[ln] != lset[ln] {
					eq = false
					break
				}
			}
			if eq {
				return src.fp, true
			}
		}
	}
	return 0, false
}
