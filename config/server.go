package config

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// ServerConfig is the HTTP server: listen address, external URL, auth and TLS.
type ServerConfig struct {
	// Listen is the HTTP listen address (flag --listen).
	Listen string `yaml:"listen"`
	// ExternalURL is how users reach Vigil; used in alert links. Defaults to http://<listen>.
	ExternalURL string `yaml:"external_url"`
	// GrafanaURL, when set, is linked from notifications.
	GrafanaURL string `yaml:"grafana_url"`
	// ShutdownTimeout bounds a clean shutdown.
	ShutdownTimeout Duration   `yaml:"shutdown_timeout"`
	Auth            AuthConfig `yaml:"auth"`
	TLS             TLSConfig  `yaml:"tls"`
}

// AuthConfig is optional authentication of HTTP requests: a bearer token, basic auth, or
// both (either one then suffices). Secrets come inline, from a file, or from an
// environment variable.
type AuthConfig struct {
	BearerToken     Secret    `yaml:"bearer_token"`
	BearerTokenFile string    `yaml:"bearer_token_file"`
	BearerTokenEnv  string    `yaml:"bearer_token_env"`
	BasicAuth       BasicAuth `yaml:"basic_auth"`
}

// BasicAuth is one user allowed by HTTP basic auth.
type BasicAuth struct {
	Username     string `yaml:"username"`
	Password     Secret `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
	PasswordEnv  string `yaml:"password_env"`
}

// TLSConfig turns on HTTPS when both files are set.
type TLSConfig struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

func defaultServer() ServerConfig {
	return ServerConfig{Listen: "127.0.0.1:9201", ShutdownTimeout: Duration(10 * time.Second)}
}

func (s *ServerConfig) validate() error {
	if s.Listen == "" {
		return errors.New("server.listen: must not be empty")
	}
	if (s.TLS.CertFile == "") != (s.TLS.KeyFile == "") {
		return errors.New("server.tls: cert_file and key_file must be set together")
	}
	return nil
}

// ResolveSecret returns the secret from exactly one of: the inline value, the file
// (trailing newline trimmed) or the environment variable. All empty gives "".
func ResolveSecret(inline Secret, file, env string) (string, error) {
	n := 0
	for _, s := range []string{string(inline), file, env} {
		if s != "" {
			n++
		}
	}
	if n > 1 {
		return "", errors.New("set only one of the value, its _file and its _env")
	}
	switch {
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("read secret file: %w", err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	case env != "":
		v, ok := os.LookupEnv(env)
		if !ok {
			return "", fmt.Errorf("environment variable %s is not set", env)
		}
		return v, nil
	}
	return string(inline), nil
}
