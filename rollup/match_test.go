package rollup

import (
	"testing"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/vigilhq/vigil/sample"
)

// TestMatchesRawAgreesWithMatches checks the allocation-free matcher used for new
// series against the labels.Labels one, for every kind of matcher, present and absent
// labels, and empty values.
func TestMatchesRawAgreesWithMatches(t *testing.T) {
	selectors := []string{
		`{__name__="http_requests_total"}`,
		`{__name__=~"http_.*", code!="500"}`,
		`{__name__!="up", job=~"api|web"}`,
		`{__name__="x", missing=""}`,
		`{__name__="x", missing!=""}`,
		`{__name__="x", code!~"5.."}`,
	}
	series := []labels.Labels{
		labels.FromStrings("__name__", "http_requests_total", "code", "200", "job", "api"),
		labels.FromStrings("__name__", "http_requests_total", "code", "500", "job", "web"),
		labels.FromStrings("__name__", "up", "job", "api"),
		labels.FromStrings("__name__", "x", "code", "503"),
		labels.FromStrings("__name__", "x", "missing", "here"),
		labels.FromStrings("__name__", "x"),
	}
	for _, sel := range selectors {
		r, err := compileRule(rc("r", sel, "5s", "", nil, nil, "count_samples"))
		if err != nil {
			t.Fatalf("%s: %v", sel, err)
		}
		for _, ls := range series {
			var raw []sample.Label
			ls.Range(func(l labels.Label) { raw = append(raw, sample.Label{Name: []byte(l.Name), Value: []byte(l.Value)}) })
			if got, want := r.matchesRaw(raw), r.matches(ls); got != want {
				t.Errorf("%s on %s: matchesRaw %v, matches %v", sel, ls, got, want)
			}
		}
	}
}
