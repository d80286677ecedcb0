package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgvigil/pgvigil/internal/certs"
	"github.com/pgvigil/pgvigil/internal/config"
)

// TestRESTCheckOverMutualTLS: the REST API check before routing works against an API that
// requires client certificates from the cluster CA, fails without the CA or the certificate,
// and presents a renewed certificate after ReloadTLS (SIGHUP) without a restart.
func TestRESTCheckOverMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, err := certs.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Save(dir, true); err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, certs.CACertFile)
	issue := func(name string, usage certs.Usage) (string, string) {
		t.Helper()
		c, k, err := ca.IssueFor(name, []string{"127.0.0.1"}, usage, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		cf, kf, err := certs.WriteIssued(dir, name, c, k, true)
		if err != nil {
			t.Fatal(err)
		}
		return cf, kf
	}
	srvCert, srvKey := issue("node1", certs.Usage{Server: true})
	cliCert, cliKey := issue("proxy", certs.Usage{Client: true})

	// A member's REST API as the node serves it with verify_client: required.
	pair, err := tls.LoadX509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pemCA, _ := os.ReadFile(caFile)
	pool.AppendCertsFromPEM(pemCA)
	var mu sync.Mutex
	var seen []string // client certificate serials, one per request
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.TLS.PeerCertificates[0].SerialNumber.String())
		mu.Unlock()
		if r.URL.Path != "/primary" {
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes below are expected
	srv.StartTLS()
	defer srv.Close()
	api := srv.URL

	newProxy := func(restapi string) *Proxy {
		t.Helper()
		cfg, err := config.ParseProxy([]byte("scope: demo\netcd3: {hosts: 127.0.0.1:2379}\nlisten: {read_write: 127.0.0.1:0}\n" +
			"auth: {type: trust}\n" + restapi))
		if err != nil {
			t.Fatal(err)
		}
		p, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.rwLn.Close() })
		return p
	}
	ctx := context.Background()

	full := newProxy("restapi: {cafile: " + caFile + ", certfile: " + cliCert + ", keyfile: " + cliKey + "}\n")
	top := &topology{p: full}
	if !top.isPrimary(ctx, api) {
		t.Fatalf("the check failed with the cluster CA and a client certificate: %s", top.apiProblem)
	}
	for _, tc := range []struct{ name, restapi, want string }{
		{"system roots only", "", "certificate signed by unknown authority"},
		{"no client certificate", "restapi: {cafile: " + caFile + "}\n", "certificate required"},
	} {
		top := &topology{p: newProxy(tc.restapi)}
		if top.isPrimary(ctx, api) {
			t.Errorf("%s: the check succeeded", tc.name)
		} else if !strings.Contains(top.apiProblem, tc.want) {
			t.Errorf("%s: the logged problem %q does not say %q", tc.name, top.apiProblem, tc.want)
		}
	}

	// Renew the client certificate in place; after ReloadTLS new connections present it.
	mu.Lock()
	first := seen[len(seen)-1]
	mu.Unlock()
	issue("proxy", certs.Usage{Client: true})
	renewed := fileSerial(t, cliCert)
	if renewed == first {
		t.Fatal("the renewal has the old serial")
	}
	if err := full.ReloadTLS(); err != nil {
		t.Fatal(err)
	}
	if !top.isPrimary(ctx, api) {
		t.Fatalf("the check failed after the reload: %s", top.apiProblem)
	}
	mu.Lock()
	last := seen[len(seen)-1]
	mu.Unlock()
	if last != renewed {
		t.Errorf("after ReloadTLS the API saw serial %s, want the renewed %s", last, renewed)
	}

	// A reload that fails (the key no longer matches) names the key and keeps what was loaded.
	other, _ := issue("other", certs.Usage{Client: true})
	b, _ := os.ReadFile(other)
	if err := os.WriteFile(cliCert, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := full.ReloadTLS(); err == nil || !strings.Contains(err.Error(), "restapi.certfile") {
		t.Errorf("a mismatched pair reloaded: %v", err)
	}
	if !top.isPrimary(ctx, api) {
		t.Errorf("the check failed after a failed reload: %s", top.apiProblem)
	}
}

func fileSerial(t *testing.T, path string) string {
	t.Helper()
	c, err := tls.LoadX509KeyPair(path, strings.TrimSuffix(path, ".crt")+".key")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf.SerialNumber.String()
}
