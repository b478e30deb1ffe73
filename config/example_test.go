package config

import (
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestExampleConfigListsEveryKey keeps vigil.example.yaml, the configuration reference,
// true: every key of every section's type appears in it, and it has no key that the
// types do not know (the strict decoder would refuse it anyway).
func TestExampleConfigListsEveryKey(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "vigil.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	var walkNode func(prefix string, n *yaml.Node)
	walkNode = func(prefix string, n *yaml.Node) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walkNode(prefix, c)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				key := prefix + n.Content[i].Value
				have[key] = true
				walkNode(key+".", n.Content[i+1])
			}
		case yaml.SequenceNode:
			for _, c := range n.Content {
				walkNode(prefix, c)
			}
		}
	}
	walkNode("", &doc)

	var want []string
	var walkType func(prefix string, t reflect.Type)
	walkType = func(prefix string, t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || t == reflect.TypeOf(AlertingSection{}) {
			return
		}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			want = append(want, prefix+name)
			walkType(prefix+name+".", f.Type)
		}
	}
	walkType("", reflect.TypeOf(Config{}))
	sort.Strings(want)
	for _, k := range want {
		if !have[k] {
			t.Errorf("vigil.example.yaml lacks the key %s", k)
		}
	}
}
