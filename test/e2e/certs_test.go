package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func pgvigil(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(binary, args...).CombinedOutput()
	return string(out), err
}

// TestCertsCommand: init a CA, issue a certificate, show it, refuse to overwrite, and check the
// result with the standard library as a TLS peer would.
func TestCertsCommand(t *testing.T) {
	dir := t.TempDir()
	if out, err := pgvigil(t, "certs", "init", "--dir", dir); err != nil {
		t.Fatalf("init: %v\n%s", err, out)
	}
	if fi, err := os.Stat(filepath.Join(dir, "ca.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("ca.key: %v %v, want mode 0600", fi, err)
	}
	if out, err := pgvigil(t, "certs", "init", "--dir", dir); err == nil || !strings.Contains(out, "--force") {
		t.Fatalf("init over an existing CA: %v\n%s", err, out)
	}
	if out, err := pgvigil(t, "certs", "issue", "--dir", dir, "--name", "node1"); err == nil || !strings.Contains(out, "at least one IP address or DNS name") {
		t.Fatalf("issue without SANs: %v\n%s", err, out)
	}
	if out, err := pgvigil(t, "certs", "issue", "--dir", dir, "--name", "node1", "--ip", "10.0.1.10", "--dns", "db1.example", "--usage", "server"); err != nil {
		t.Fatalf("issue: %v\n%s", err, out)
	}
	if out, err := pgvigil(t, "certs", "issue", "--dir", dir, "--name", "node1", "--ip", "10.0.1.10"); err == nil {
		t.Fatalf("issue over an existing certificate without --force succeeded:\n%s", out)
	}
	out, err := pgvigil(t, "certs", "show", filepath.Join(dir, "node1.crt"))
	if err != nil || !strings.Contains(out, "IP:10.0.1.10") || !strings.Contains(out, "DNS:db1.example") || !strings.Contains(out, "usage:      server\n") {
		t.Fatalf("show: %v\n%s", err, out)
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "node1.crt"), filepath.Join(dir, "node1.key"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "db1.example"}); err != nil {
		t.Fatalf("issued certificate does not verify against the CA: %v", err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "10.0.1.10", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Fatal("a server-only certificate verified as a client certificate")
	}
}
