package config

import (
	"gopkg.in/yaml.v3"
)

// AlertingSection holds an Alertmanager configuration (route, receivers,
// inhibit_rules, time_intervals, ...) as written, so an existing Alertmanager config
// pastes in unchanged. The alerting package decodes and validates it.
type AlertingSection struct {
	Node yaml.Node
}

// UnmarshalYAML keeps the section's YAML for the alerting package.
func (a *AlertingSection) UnmarshalYAML(n *yaml.Node) error {
	a.Node = *n
	return nil
}

// IsZero reports whether the section was absent.
func (a *AlertingSection) IsZero() bool { return a.Node.Kind == 0 }

// YAML returns the section re-encoded as a YAML document, or nil when absent.
func (a *AlertingSection) YAML() ([]byte, error) {
	if a.IsZero() {
		return nil, nil
	}
	return yaml.Marshal(&a.Node)
}
