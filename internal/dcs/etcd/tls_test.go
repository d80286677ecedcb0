package etcd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgvigil/pgvigil/internal/certs"
	"github.com/pgvigil/pgvigil/internal/dcs"
	"github.com/pgvigil/pgvigil/internal/embedetcd"
)

// issue returns a certificate and key in PEM signed by ca: for 127.0.0.1 as a server (and
// client), else as a client named cn.
func issue(t *testing.T, ca *certs.CA, cn string, server bool) (certPEM, keyPEM []byte) {
	t.Helper()
	c, k, err := ca.IssueFor(cn, []string{"127.0.0.1"}, certs.Usage{Server: server, Client: true}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return c, k
}

func newCA(t *testing.T, name string) *certs.CA {
	t.Helper()
	ca, err := certs.NewCA(name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func tlsStore(t *testing.T, eps []string, name string, tc *tls.Config) *Store {
	t.Helper()
	s, err := New(Config{
		Endpoints: eps, Namespace: testNamespace, Scope: testScope, Name: name,
		TTL: 10 * time.Second, RetryTimeout: time.Second, TLS: tc,
	})
	if err != nil {
		t.Fatalf("New(%s): %v", name, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestTLSClientCertAuth(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "etcd-ca")
	srvCert, srvKey := issue(t, ca, "etcd", true)
	cliCert, cliKey := issue(t, ca, "pgvigil", false)
	caFile := writeFile(t, dir, "ca.crt", ca.PEM())
	srv, err := embedetcd.StartTLS(filepath.Join(dir, "data"), writeFile(t, dir, "server.crt", srvCert),
		writeFile(t, dir, "server.key", srvKey), caFile, true)
	if err != nil {
		t.Fatalf("starting embedded etcd with TLS: %v", err)
	}
	t.Cleanup(srv.Close)
	if u := srv.ClientURL(); u != "https://"+srv.Endpoints()[0] {
		t.Fatalf("client URL %q", u)
	}

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.PEM())
	pair, err := tls.X509KeyPair(cliCert, cliKey)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("CA and client certificate", func(t *testing.T) {
		s := tlsStore(t, srv.Endpoints(), "node1", &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, Certificates: []tls.Certificate{pair}})
		if s.cfg.Endpoints[0] != srv.ClientURL() {
			t.Fatalf("endpoint %q, want %q", s.cfg.Endpoints[0], srv.ClientURL())
		}
		ctx := context.Background()
		if err := s.AcquireLeader(ctx); err != nil {
			t.Fatalf("AcquireLeader: %v", err)
		}
		v, err := s.Get(ctx)
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		if v.Leader == nil || v.Leader.Name != "node1" {
			t.Fatalf("leader %+v", v.Leader)
		}
	})

	refused := func(t *testing.T, tc *tls.Config) {
		t.Helper()
		s := tlsStore(t, []string{srv.ClientURL()}, "node2", tc)
		start := time.Now()
		_, err := s.Get(context.Background())
		if err == nil || !errors.Is(err, dcs.ErrUnavailable) {
			t.Fatalf("Get = %v, want an error wrapping ErrUnavailable", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Get took %v with a 1s retry timeout", d)
		}
	}
	t.Run("no client certificate", func(t *testing.T) {
		refused(t, &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots})
	})
	t.Run("another CA", func(t *testing.T) {
		other := x509.NewCertPool()
		other.AppendCertsFromPEM(newCA(t, "other-ca").PEM())
		refused(t, &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: other, Certificates: []tls.Certificate{pair}})
	})
	t.Run("system CAs only, and http:// refused with TLS", func(t *testing.T) {
		refused(t, nil) // https:// without TLS settings: the system CAs do not know ours
		if _, err := New(Config{Endpoints: []string{"http://" + srv.Endpoints()[0]}, Scope: testScope, Name: "x",
			TLS: &tls.Config{RootCAs: roots}}); err == nil {
			t.Fatal("http:// endpoint accepted with TLS settings")
		}
	})

	t.Run("restart keeps TLS", func(t *testing.T) {
		if err := srv.Restart(); err != nil {
			t.Fatalf("Restart: %v", err)
		}
		s := tlsStore(t, srv.Endpoints(), "node3", &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, Certificates: []tls.Certificate{pair}})
		var err error
		for range 10 { // the first call after a restart may race the member becoming leader
			if _, err = s.Get(context.Background()); err == nil {
				break
			}
		}
		if err != nil {
			t.Fatalf("Get after restart: %v", err)
		}
	})
}
