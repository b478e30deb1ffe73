// Package config is Vigil's configuration file (vigil.yaml): its sections, their
// defaults, and strict decoding in which an unknown key is an error naming the key and
// its line. Each section's type lives in a file named after the section.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"

	"gopkg.in/yaml.v3"
)

// Config is the whole of vigil.yaml. Every field has a working default (see Default),
// so an empty file, or none, runs Vigil on its embedded defaults.
type Config struct {
	// DataDir holds the log, the query store and every other file Vigil writes.
	DataDir   string          `yaml:"data_dir"`
	Server    ServerConfig    `yaml:"server"`
	NATS      NATSConfig      `yaml:"nats"`
	Log       LogConfig       `yaml:"log"`
	Limits    LimitsConfig    `yaml:"limits"`
	Query     QueryConfig     `yaml:"query"`
	Rollups   []RollupConfig  `yaml:"rollups"`
	RuleFiles []string        `yaml:"rule_files"`
	Rules     RulesConfig     `yaml:"rules"`
	Alerting  AlertingSection `yaml:"alerting"`
}

// Default returns the embedded defaults of `vigil serve` with no config file.
func Default() *Config {
	return &Config{
		DataDir:   "./data",
		Server:    defaultServer(),
		NATS:      defaultNATS(),
		Log:       defaultLog(),
		Limits:    defaultLimits(),
		Query:     defaultQuery(),
		RuleFiles: []string{"rules/*.yml"},
		Rules:     defaultRules(),
	}
}

// Load reads and strictly decodes the file at path over the defaults.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Parse strictly decodes a vigil.yaml document over the defaults and validates it.
// An unknown key is an error of the form `line 12: unknown key "foo" in server`.
func Parse(b []byte) (*Config, error) {
	c := Default()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return nil, friendlyYAMLError(err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// Validate checks the values of every section.
func (c *Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("data_dir: must not be empty")
	}
	for _, v := range []interface{ validate() error }{&c.Server, &c.NATS, &c.Log, &c.Limits, &c.Query, &c.Rules} {
		if err := v.validate(); err != nil {
			return err
		}
	}
	if ra, bd := c.Log.RetentionAge.D(), c.Query.BlockDuration.D(); ra > 0 && ra < bd*3/2 {
		// The query store commits the log only past samples in blocks on disk: a crash
		// replays up to 1.5 block durations, which the log must still hold.
		return fmt.Errorf("log.retention_age %s is shorter than 1.5 x query.block_duration (%s): a crash could lose samples not yet in a block", ra, bd*3/2)
	}
	seen := map[string]bool{}
	for i := range c.Rollups {
		if err := c.Rollups[i].validate(); err != nil {
			return fmt.Errorf("rollups[%d]: %w", i, err)
		}
		if seen[c.Rollups[i].Name] {
			return fmt.Errorf("rollups[%d]: duplicate name %q", i, c.Rollups[i].Name)
		}
		seen[c.Rollups[i].Name] = true
	}
	return nil
}

var unknownField = regexp.MustCompile(`line (\d+): field (\S+) not found in type config\.(\w+)`)

// friendlyYAMLError rewrites yaml.v3's "field x not found in type config.FooConfig"
// into "line N: unknown key "x" in <section>".
func friendlyYAMLError(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("parse: %w", err)
	}
	msgs := make([]string, 0, len(te.Errors))
	for _, m := range te.Errors {
		if s := unknownField.FindStringSubmatch(m); s != nil {
			line, _ := strconv.Atoi(s[1])
			m = fmt.Sprintf("line %d: unknown key %q in %s", line, s[2], sectionName(s[3]))
		}
		msgs = append(msgs, m)
	}
	return &Error{Messages: msgs}
}

// Error lists every problem found while decoding a config file.
type Error struct {
	Messages []string
}

func (e *Error) Error() string {
	var buf bytes.Buffer
	for i, m := range e.Messages {
		if i > 0 {
			buf.WriteString("; ")
		}
		buf.WriteString(m)
	}
	return buf.String()
}

var sectionNames = map[string]string{
	"Config":         "the top level",
	"ServerConfig":   "server",
	"AuthConfig":     "server.auth",
	"BasicAuth":      "server.auth.basic_auth",
	"TLSConfig":      "server.tls",
	"NATSConfig":     "nats",
	"LogConfig":      "log",
	"LimitsConfig":   "limits",
	"QueryConfig":    "query",
	"RollupConfig":   "rollups",
	"RulesConfig":    "rules",
	"TopicOverrides": "log.topics",
}

func sectionName(typ string) string {
	if n, ok := sectionNames[typ]; ok {
		return n
	}
	return typ
}
