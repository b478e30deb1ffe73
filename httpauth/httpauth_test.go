package httpauth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/config"
)

func TestAuthenticator(t *testing.T) {
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "token")
	os.WriteFile(tokFile, []byte("s3cret-token\n"), 0o600)
	t.Setenv("VIGIL_TEST_PW", "pa55")
	a, err := New(config.AuthConfig{
		BearerTokenFile: tokFile,
		BasicAuth:       config.BasicAuth{Username: "prom", PasswordEnv: "VIGIL_TEST_PW"},
	})
	if err != nil {
		t.Fatal(err)
	}
	rejects := 0
	h := a.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }), func() { rejects++ })
	f := func(set func(r *http.Request), want int) {
		t.Helper()
		r := httptest.NewRequest("POST", "/api/v1/write", nil)
		set(r)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if rec.Code != want {
			t.Fatalf("got %d, want %d", rec.Code, want)
		}
		if want == 401 {
			if rec.Header().Get("WWW-Authenticate") == "" || strings.Contains(rec.Body.String(), "s3cret") || strings.Contains(rec.Body.String(), "pa55") {
				t.Fatalf("401 answer: %v %q", rec.Header(), rec.Body.String())
			}
		}
	}
	f(func(r *http.Request) {}, 401)
	f(func(r *http.Request) { r.Header.Set("Authorization", "Bearer s3cret-token") }, 204)
	f(func(r *http.Request) { r.Header.Set("Authorization", "bearer s3cret-token") }, 204)
	f(func(r *http.Request) { r.Header.Set("Authorization", "Bearer wrong") }, 401)
	f(func(r *http.Request) { r.SetBasicAuth("prom", "pa55") }, 204)
	f(func(r *http.Request) { r.SetBasicAuth("prom", "nope") }, 401)
	f(func(r *http.Request) { r.SetBasicAuth("other", "pa55") }, 401)
	if rejects != 4 {
		t.Fatalf("%d rejects counted, want 4", rejects)
	}
}

func TestAuthenticatorConfigErrors(t *testing.T) {
	f := func(cfg config.AuthConfig, want string) {
		t.Helper()
		_, err := New(cfg)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("err %v, want %q", err, want)
		}
		if strings.Contains(err.Error(), "topsecret") {
			t.Fatalf("error shows the secret: %v", err)
		}
	}
	f(config.AuthConfig{BearerToken: "topsecret", BearerTokenEnv: "X"}, "only one")
	f(config.AuthConfig{BearerTokenFile: "/nonexistent/token"}, "read secret file")
	f(config.AuthConfig{BearerTokenEnv: "VIGIL_TEST_UNSET_VAR"}, "is not set")
	f(config.AuthConfig{BasicAuth: config.BasicAuth{Username: "u"}}, "without a password")
	f(config.AuthConfig{BasicAuth: config.BasicAuth{Password: "topsecret"}}, "without a username")
	a, err := New(config.AuthConfig{})
	if err != nil || a.Enabled() {
		t.Fatalf("empty config: %v %v", a.Enabled(), err)
	}
	h := http.NotFoundHandler()
	if a.Wrap(h, nil) == nil {
		t.Fatal("nil handler")
	}
}

func writeCert(t *testing.T, dir, cn string) (string, string) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(key)
	cf, kf := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(cf, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(kf, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600)
	return cf, kf
}

func TestTLSConfig(t *testing.T) {
	if c, err := TLSConfig(config.TLSConfig{}); c != nil || err != nil {
		t.Fatalf("no TLS: %v %v", c, err)
	}
	if _, err := TLSConfig(config.TLSConfig{CertFile: "x"}); err == nil {
		t.Fatal("cert without key accepted")
	}
	dir := t.TempDir()
	if _, err := TLSConfig(config.TLSConfig{CertFile: filepath.Join(dir, "c"), KeyFile: filepath.Join(dir, "k")}); err == nil {
		t.Fatal("missing files accepted")
	}
	cf, kf := writeCert(t, dir, "vigil-test")
	tc, err := TLSConfig(config.TLSConfig{CertFile: cf, KeyFile: kf})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }), TLSConfig: tc}
	go srv.ServeTLS(ln, "", "")
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := client.Get("https://" + ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 || resp.TLS == nil || resp.TLS.PeerCertificates[0].Subject.CommonName != "vigil-test" {
		t.Fatalf("TLS answer %d", resp.StatusCode)
	}
}
