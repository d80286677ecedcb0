package certs

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"strings"
	"testing"
	"time"
)

func TestIssuedCertificateVerifiesForServerAndClient(t *testing.T) {
	f, err := WriteSet(t.TempDir(), "node1", []string{"127.0.0.1", "db1.example"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatalf("certificate and key do not load as a pair: %v", err)
	}
	caPEM, _ := os.ReadFile(f.CA)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("the CA file holds no certificate")
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	for _, tc := range []struct {
		host  string
		usage x509.ExtKeyUsage
		ok    bool
	}{
		{"127.0.0.1", x509.ExtKeyUsageServerAuth, true},
		{"db1.example", x509.ExtKeyUsageServerAuth, true},
		{"127.0.0.1", x509.ExtKeyUsageClientAuth, true},
		{"10.0.0.9", x509.ExtKeyUsageServerAuth, false},
	} {
		_, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: tc.host, KeyUsages: []x509.ExtKeyUsage{tc.usage}})
		if (err == nil) != tc.ok {
			t.Errorf("verify %s for %v: err %v, want ok=%v", tc.host, tc.usage, err, tc.ok)
		}
	}
	other, _ := NewCA("other", time.Hour)
	otherPool := x509.NewCertPool()
	otherPool.AppendCertsFromPEM(other.PEM())
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: otherPool, DNSName: "127.0.0.1"}); err == nil {
		t.Fatal("a certificate verified against a CA that did not sign it")
	}
	if fi, _ := os.Stat(f.Key); fi.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestSaveLoadAndRefuseOverwrite(t *testing.T) {
	dir := t.TempDir()
	ca, err := NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Save(dir, false); err != nil {
		t.Fatal(err)
	}
	if err := ca.Save(dir, false); err == nil {
		t.Fatal("Save replaced an existing CA without force")
	}
	loaded, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := loaded.IssueFor("n", []string{"127.0.0.1"}, Usage{Client: true}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := WriteIssued(dir, "n", cert, key, false); err != nil {
		t.Fatal(err)
	}
	desc, err := Describe(dir + "/n.crt")
	if err != nil || !contains(desc, "usage:      client") || !contains(desc, "IP:127.0.0.1") || !contains(desc, "(valid)") {
		t.Fatalf("Describe = %q, %v", desc, err)
	}
	if _, _, err := loaded.IssueFor("n", nil, Usage{Server: true}, time.Hour); err == nil {
		t.Fatal("a certificate without SANs was issued")
	}
	if _, _, err := loaded.IssueFor("n", []string{"x"}, Usage{}, time.Hour); err == nil {
		t.Fatal("a certificate without usage was issued")
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
