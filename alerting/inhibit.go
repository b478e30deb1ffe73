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

// inhibited reports whether lset is muted by any rule given every alert known
// (firing or not; resolved ones are ignored as sources). An alert matching both
// sides of a rule is not inhibited by alerts that also match both sides, exactly as
// in Alertmanager, so that such alerts do not mute each other.
func inhibited(rules []*inhibitRule, lset model.LabelSet, all map[model.Fingerprint]*amalert.Alert, now time.Time) bool {
	_, ok := inhibitedBy(rules, lset, all, now)
	return ok
}

// inhibitedBy is inhibited, also naming the inhibiting alert.
func inhibitedBy(rules []*inhibitRule, lset model.LabelSet, all map[model.Fingerprint]*amalert.Alert, now time.Time) (model.Fingerprint, bool) {
	for _, r := range rules {
		if !r.target.Matches(lset) {
			continue
		}
		twoSided := r.source.Matches(lset)
		for fp, src := range all {
			if src.ResolvedAt(now) || !r.source.Matches(src.Labels) {
				continue
			}
			if twoSided && r.target.Matches(src.Labels) {
				continue
			}
			eq := true
			for _, ln := range r.equal {
				if src.Labels[ln] != lset[ln] {
					eq = false
					break
				}
			}
			if eq {
				return fp, true
			}
		}
	}
	return 0, false
}
