package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/snappy"
	"github.com/prometheus/prometheus/prompb"
)

// selfSignedCert writes a certificate for 127.0.0.1 and its key to dir and returns
// their paths and a pool that trusts the certificate.
func selfSignedCert(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "vigil test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestServeTLS: with server.tls (and a bearer token from a file), vigil serve speaks
// only HTTPS; a remote-write over HTTPS is acknowledged and its sample is queryable
// over HTTPS; a plain-HTTP request and a client that does not trust the certificate get
// nothing.
func TestServeTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSignedCert(t, dir)
	const token = "tls-test-token"
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "vigil.yaml")
	yaml := "server:\n  tls:\n    cert_file: " + certFile + "\n    key_file: " + keyFile +
		"\n  auth:\n    bearer_token_file: " + tokenFile + "\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	p := startVigilWith(t, dir, "https", client, "--config", cfg)
	p.token = token

	now := time.Now().UnixMilli()
	raw, err := (&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
		Labels:  []prompb.Label{{Name: "__name__", Value: "tls_written"}, {Name: "job", Value: "t"}},
		Samples: []prompb.Sample{{Timestamp: now, Value: 42}},
	}}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	post := func(c *http.Client, scheme, tok string) (int, error) {
		req, _ := http.NewRequest("POST", scheme+"://"+p.addr+"/api/v1/write", bytes.NewReader(snappy.Encode(nil, raw)))
		req.Header.Set("Content-Type", "application/x-protobuf")
		req.Header.Set("Content-Encoding", "snappy")
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if code, err := post(client, "https", token); err != nil || code != http.StatusNoContent {
		t.Fatalf("remote-write over HTTPS: %d %v, want 204", code, err)
	}
	// Plain HTTP to the TLS port is refused (Go's server answers 400 to it).
	if code, err := post(http.DefaultClient, "http", token); err == nil && code/100 == 2 {
		t.Fatalf("remote-write over plain HTTP was accepted: %d", code)
	}
	// A client that does not trust the certificate cannot connect.
	untrusting := &http.Client{Timeout: 10 * time.Second}
	if _, err := post(untrusting, "https", token); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a client without the CA connected: %v", err)
	}
	p.token = ""
	if code, _ := p.get(t, "/api/v1/labels"); code != http.StatusUnauthorized {
		t.Fatalf("a query over HTTPS without the token: %d, want 401", code)
	}
	p.token = token
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body := p.get(t, "/api/v1/query?"+url.Values{"query": {"tls_written"}}.Encode())
		var r vectorAnswer
		if code == 200 && json.Unmarshal([]byte(body), &r) == nil && len(r.Data.Result) == 1 && r.Data.Result[0].Value[1] == "42" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sample written over HTTPS is not queryable: %d %s", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
