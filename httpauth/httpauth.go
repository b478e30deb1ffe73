// Package httpauth is the optional authentication and TLS of Vigil's HTTP endpoints,
// from config.ServerConfig: a bearer token, HTTP basic auth, or both (either one then
// suffices), and HTTPS from a certificate and key file. Secrets are resolved once
// (inline, *_file or *_env, see config.ResolveSecret), compared in constant time, and
// never logged or echoed in a response.
package httpauth

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/vigilhq/vigil/config"
)

// Authenticator checks requests against the configured credentials. The zero value
// (and one built from an empty config) lets every request through. Safe for
// concurrent use.
type Authenticator struct {
	token    *[32]byte // sha256 of the bearer token
	user     *[32]byte
	password *[32]byte
}

// New resolves the secrets of cfg. It fails (without printing a secret) when a secret
// file or variable is missing, when more than one source of a secret is set, or when
// basic auth has a username but no password.
func New(cfg config.AuthConfig) (*Authenticator, error) {
	a := &Authenticator{}
	tok, err := config.ResolveSecret(cfg.BearerToken, cfg.BearerTokenFile, cfg.BearerTokenEnv)
	if err != nil {
		return nil, fmt.Errorf("server.auth.bearer_token: %w", err)
	}
	if tok != "" {
		a.token = hash(tok)
	}
	ba := cfg.BasicAuth
	pw, err := config.ResolveSecret(ba.Password, ba.PasswordFile, ba.PasswordEnv)
	if err != nil {
		return nil, fmt.Errorf("server.auth.basic_auth.password: %w", err)
	}
	switch {
	case ba.Username != "" && pw == "":
		return nil, errors.New("server.auth.basic_auth: username set without a password")
	case ba.Username == "" && pw != "":
		return nil, errors.New("server.auth.basic_auth: password set without a username")
	case ba.Username != "":
		a.user, a.password = hash(ba.Username), hash(pw)
	}
	return a, nil
}

func hash(s string) *[32]byte {
	h := sha256.Sum256([]byte(s))
	return &h
}

func equal(h *[32]byte, s string) bool {
	g := sha256.Sum256([]byte(s))
	return subtle.ConstantTimeCompare(h[:], g[:]) == 1
}

// Enabled reports whether any credential is configured.
func (a *Authenticator) Enabled() bool {
	return a != nil && (a.token != nil || a.user != nil)
}

// Check reports whether r carries valid credentials (always true when not Enabled).
func (a *Authenticator) Check(r *http.Request) bool {
	if !a.Enabled() {
		return true
	}
	h := r.Header.Get("Authorization")
	if a.token != nil {
		if scheme, tok, ok := strings.Cut(h, " "); ok && strings.EqualFold(scheme, "Bearer") && equal(a.token, strings.TrimSpace(tok)) {
			return true
		}
	}
	if a.user != nil {
		if u, p, ok := r.BasicAuth(); ok {
			// Evaluate both comparisons: no early exit on the user name.
			uok, pok := equal(a.user, u), equal(a.password, p)
			return uok && pok
		}
	}
	return false
}

// Wrap returns h guarded by the Authenticator: a request without valid credentials
// gets 401 with a WWW-Authenticate challenge, and onReject (if not nil) is called.
// When not Enabled, h is returned as it is.
func (a *Authenticator) Wrap(h http.Handler, onReject func()) http.Handler {
	if !a.Enabled() {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.Check(r) {
			h.ServeHTTP(w, r)
			return
		}
		if onReject != nil {
			onReject()
		}
		if a.user != nil {
			w.Header().Add("WWW-Authenticate", `Basic realm="vigil", charset="UTF-8"`)
		}
		if a.token != nil {
			w.Header().Add("WWW-Authenticate", `Bearer realm="vigil"`)
		}
		http.Error(w, "unauthorized: missing or invalid credentials (server.auth)", http.StatusUnauthorized)
	})
}

// TLSConfig returns the server TLS configuration for cfg, or nil when TLS is off. The
// certificate and key are loaded now (so that a bad pair fails at start) and re-read
// when either file changes, so a renewed certificate is used without a restart.
func TLSConfig(cfg config.TLSConfig) (*tls.Config, error) {
	if cfg.CertFile == "" && cfg.KeyFile == "" {
		return nil, nil
	}
	if cfg.CertFile == "" || cfg.KeyFile == "" {
		return nil, errors.New("server.tls: cert_file and key_file must be set together")
	}
	kp := &keyPair{certFile: cfg.CertFile, keyFile: cfg.KeyFile}
	if _, err := kp.get(); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return kp.get() },
	}, nil
}

type keyPair struct {
	certFile, keyFile string
	mu                sync.Mutex
	cert              *tls.Certificate
	certMod, keyMod   time.Time
	checked           time.Time
}

func (k *keyPair) get() (*tls.Certificate, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cert != nil && time.Since(k.checked) < time.Second {
		return k.cert, nil
	}
	k.checked = time.Now()
	cs, err1 := os.Stat(k.certFile)
	ks, err2 := os.Stat(k.keyFile)
	if err := errors.Join(err1, err2); err != nil {
		if k.cert != nil {
			return k.cert, nil // keep serving the loaded pair
		}
		return nil, fmt.Errorf("server.tls: %w", err)
	}
	if k.cert != nil && cs.ModTime().Equal(k.certMod) && ks.ModTime().Equal(k.keyMod) {
		return k.cert, nil
	}
	c, err := tls.LoadX509KeyPair(k.certFile, k.keyFile)
	if err != nil {
		if k.cert != nil {
			return k.cert, nil
		}
		return nil, fmt.Errorf("server.tls: load %s and %s: %w", k.certFile, k.keyFile, err)
	}
	k.cert, k.certMod, k.keyMod = &c, cs.ModTime(), ks.ModTime()
	return k.cert, nil
}
