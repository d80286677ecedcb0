package api

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgvigil/pgvigil/internal/agent"
	"github.com/pgvigil/pgvigil/internal/certs"
	"github.com/pgvigil/pgvigil/internal/cluster"
	"github.com/pgvigil/pgvigil/internal/ha"
	"github.com/pgvigil/pgvigil/internal/postgres"
)

// secSource is a fixed Source: a primary holding the leader key.
type secSource struct {
	snap agent.Snapshot
	live postgres.Status
}

func (f secSource) Snapshot() agent.Snapshot             { return f.snap }
func (f secSource) Live(context.Context) postgres.Status { return f.live }

func secPrimary(members ...cluster.Member) secSource {
	leader := "node1"
	return secSource{
		snap: agent.Snapshot{At: time.Now(), Held: true, Config: cluster.DefaultDynamicConfig(), LastStoreOK: time.Now(),
			View: &cluster.View{Leader: &cluster.Leader{Name: leader}, Members: members, Config: cluster.DefaultDynamicConfig(), HasConfig: true}},
		live: postgres.Status{PGState: ha.PGState{DataDir: ha.DataValid, Running: true, Ready: true, Timeline: 1, Position: 1 << 24, SysID: "7000000000000000001"},
			StartTime: time.Now().Add(-time.Hour), ServerVersion: 160004},
	}
}

func secServer(o Options) http.Handler {
	if o.Source == nil {
		o.Source = secPrimary()
	}
	o.Name, o.Scope, o.Version = "node1", "demo", "test"
	return New(o).Handler()
}

type secReq struct {
	method, path, remote, auth, body string
}

func (q secReq) do(h http.Handler) *httptest.ResponseRecorder {
	var body io.Reader
	if q.body != "" {
		body = strings.NewReader(q.body)
	}
	r := httptest.NewRequest(q.method, q.path, body)
	if q.remote != "" {
		r.RemoteAddr = q.remote
	}
	if q.auth != "" {
		r.Header.Set("Authorization", q.auth)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func basic(u, p string) string {
	r := httptest.NewRequest("GET", "/", nil)
	r.SetBasicAuth(u, p)
	return r.Header.Get("Authorization")
}

var unsafeCalls = []struct{ method, path, body string }{
	{"POST", "/restart", "{}"},
	{"POST", "/reload", ""},
	{"POST", "/switchover", `{"leader":"node1"}`},
	{"POST", "/failover", `{"candidate":"node2"}`},
	{"POST", "/reinitialize", "{}"},
	{"PATCH", "/config", `{"ttl":30}`},
	{"PUT", "/config", `{"ttl":30}`},
	{"DELETE", "/restart", ""},
	{"DELETE", "/switchover", ""},
	{"POST", "/nosuch", "{}"},
	{"PUT", "/patroni", "{}"},
}

func TestBasicAuthOnUnsafeMethods(t *testing.T) {
	h := secServer(Options{Auth: &BasicAuth{Username: "admin", Password: "s3cret"}})
	for _, c := range unsafeCalls {
		q := secReq{method: c.method, path: c.path, body: c.body}
		t.Run(c.method+c.path, func(t *testing.T) {
			cases := []struct {
				name, auth, want string
			}{
				{"no header", "", "no auth header received"},
				{"wrong password", basic("admin", "wrong"), "not authenticated"},
				{"wrong username", basic("root", "s3cret"), "not authenticated"},
				{"password prefix", basic("admin", "s3cre"), "not authenticated"},
				{"empty credentials", basic("", ""), "not authenticated"},
				{"not basic", "Bearer s3cret", "not authenticated"},
				{"bad base64", "Basic !!!", "not authenticated"},
			}
			for _, tc := range cases {
				q.auth = tc.auth
				w := q.do(h)
				if w.Code != http.StatusUnauthorized || w.Body.String() != tc.want {
					t.Errorf("%s: %d %q, want 401 %q", tc.name, w.Code, w.Body, tc.want)
				}
				if got := w.Header().Get("WWW-Authenticate"); got != `Basic realm="pgvigil"` {
					t.Errorf("%s: WWW-Authenticate = %q", tc.name, got)
				}
			}
			q.auth = basic("admin", "s3cret")
			if w := q.do(h); w.Code == http.StatusUnauthorized || w.Code == http.StatusForbidden {
				t.Errorf("right credentials: %d %q", w.Code, w.Body)
			}
		})
	}
	// The safe methods stay open, as Patroni's do.
	for _, q := range []secReq{{method: "GET", path: "/patroni"}, {method: "GET", path: "/primary"},
		{method: "HEAD", path: "/primary"}, {method: "OPTIONS", path: "/health"}, {method: "GET", path: "/cluster"}} {
		if w := q.do(h); w.Code != http.StatusOK {
			t.Errorf("%s %s without credentials: %d %q", q.method, q.path, w.Code, w.Body)
		}
	}
}

func TestNoAccessControlConfigured(t *testing.T) {
	h := secServer(Options{})
	for _, c := range unsafeCalls {
		w := secReq{method: c.method, path: c.path, body: c.body, remote: "203.0.113.50:4000"}.do(h)
		if w.Code == http.StatusUnauthorized || w.Code == http.StatusForbidden {
			t.Errorf("%s %s: %d %q", c.method, c.path, w.Code, w.Body)
		}
	}
}

func TestAllowlist(t *testing.T) {
	allow, err := ResolveAllowlist(context.Background(), []string{"10.0.0.0/8", "192.0.2.7", "2001:db8::/32"})
	if err != nil {
		t.Fatal(err)
	}
	h := secServer(Options{Allowlist: allow, Auth: &BasicAuth{Username: "u", Password: "p"}})
	good := basic("u", "p")
	cases := []struct {
		remote string
		in     bool
	}{
		{"10.1.2.3:5555", true},
		{"[::ffff:10.1.2.3]:5555", true}, // IPv4-mapped, as a dual-stack listener reports it
		{"192.0.2.7:1", true},
		{"[2001:db8::5]:80", true},
		{"[fe80::1%eth0]:80", false},
		{"192.0.2.8:1", false},
		{"203.0.113.9:1234", false},
		{"11.0.0.1:1", false},
		{"garbage", false},
	}
	for _, tc := range cases {
		w := secReq{method: "POST", path: "/restart", remote: tc.remote, auth: good, body: "{}"}.do(h)
		denied := w.Code == http.StatusForbidden && w.Body.String() == "Access is denied"
		if denied == tc.in {
			t.Errorf("%q: %d %q, want allowed=%v", tc.remote, w.Code, w.Body, tc.in)
		}
		// GET is never filtered.
		if w := (secReq{method: "GET", path: "/patroni", remote: tc.remote}).do(h); w.Code != http.StatusOK {
			t.Errorf("GET from %q: %d", tc.remote, w.Code)
		}
	}
	// The allowlist is checked before the credentials, as in Patroni.
	if w := (secReq{method: "DELETE", path: "/switchover", remote: "203.0.113.9:1"}).do(h); w.Code != http.StatusForbidden {
		t.Errorf("outside without credentials: %d %q, want 403", w.Code, w.Body)
	}
	if w := (secReq{method: "DELETE", path: "/switchover", remote: "10.0.0.1:1"}).do(h); w.Code != http.StatusUnauthorized {
		t.Errorf("inside without credentials: %d %q, want 401", w.Code, w.Body)
	}
}

func TestAllowlistIncludeMembers(t *testing.T) {
	src := secPrimary(
		cluster.Member{Name: "node1", APIURL: "http://198.51.100.5:8008/patroni"},
		cluster.Member{Name: "node2", APIURL: "https://[2001:db8::1]:8008/patroni"},
		cluster.Member{Name: "node3", APIURL: "::not a url"},
		cluster.Member{Name: "node4"},
	)
	allow, _ := ResolveAllowlist(context.Background(), []string{"127.0.0.1"})
	h := secServer(Options{Source: src, Allowlist: allow, AllowlistIncludeMembers: true})
	for remote, in := range map[string]bool{
		"198.51.100.5:40000":      true,
		"[2001:db8::1]:40000":     true,
		"[::ffff:198.51.100.5]:1": true,
		"127.0.0.1:1":             true,
		"198.51.100.6:40000":      false,
		"[2001:db8::2]:40000":     false,
	} {
		w := secReq{method: "POST", path: "/reload", remote: remote}.do(h)
		if denied := w.Code == http.StatusForbidden; denied == in {
			t.Errorf("%s: %d %q, want allowed=%v", remote, w.Code, w.Body, in)
		}
	}
	// Members only: include_members without an allowlist still restricts.
	h = secServer(Options{Source: src, AllowlistIncludeMembers: true})
	if w := (secReq{method: "POST", path: "/reload", remote: "127.0.0.1:1"}).do(h); w.Code != http.StatusForbidden {
		t.Errorf("non-member with members-only allowlist: %d", w.Code)
	}
	if w := (secReq{method: "POST", path: "/reload", remote: "198.51.100.5:1"}).do(h); w.Code == http.StatusForbidden {
		t.Errorf("member refused: %d %q", w.Code, w.Body)
	}
	// No cluster view yet: only the static list counts.
	h = secServer(Options{Source: secSource{}, AllowlistIncludeMembers: true})
	if w := (secReq{method: "POST", path: "/reload", remote: "198.51.100.5:1"}).do(h); w.Code != http.StatusForbidden {
		t.Errorf("no view: %d", w.Code)
	}
}

func TestMemberHostNamesResolvedAndCached(t *testing.T) {
	calls := 0
	m := &memberAddrs{lookup: func(_ context.Context, _, host string) ([]netip.Addr, error) {
		calls++
		if host == "db2.example" {
			return []netip.Addr{netip.MustParseAddr("::ffff:192.0.2.20")}, nil
		}
		return nil, errors.New("no such host")
	}}
	v := &cluster.View{Members: []cluster.Member{
		{Name: "a", APIURL: "http://db2.example:8008/patroni"}, {Name: "b", APIURL: "http://gone.example:8008/patroni"}}}
	ctx := context.Background()
	if !m.contains(ctx, v, netip.MustParseAddr("192.0.2.20")) {
		t.Error("resolved member address not admitted")
	}
	if m.contains(ctx, v, netip.MustParseAddr("192.0.2.21")) {
		t.Error("other address admitted")
	}
	if calls != 2 {
		t.Errorf("%d lookups for two names over two requests, want 2 (cached)", calls)
	}
}

func TestResolveAllowlist(t *testing.T) {
	got, err := ResolveAllowlist(context.Background(), []string{"10.1.2.3/8", "192.0.2.1", "::1", "::ffff:10.0.0.0/104", " 2001:db8::/32 "})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.0/8", "192.0.2.1/32", "::1/128", "10.0.0.0/8", "2001:db8::/32"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Errorf("[%d] = %v, want %v", i, got[i], want[i])
		}
	}
	for _, bad := range []string{"10.0.0.0/33", "nonsense/8", "no-such-host.invalid"} {
		if _, err := ResolveAllowlist(context.Background(), []string{bad}); err == nil || !strings.Contains(err.Error(), "restapi.allowlist") {
			t.Errorf("%q: err = %v", bad, err)
		}
	}
	if _, err := net.LookupHost("localhost"); err == nil {
		got, err := ResolveAllowlist(context.Background(), []string{"localhost"})
		if err != nil || len(got) == 0 {
			t.Errorf("localhost: %v %v", got, err)
		}
	}
}

func TestBodyLimit(t *testing.T) {
	const limit = 64
	var seen string
	s := New(Options{Source: secPrimary(), MaxBodyBytes: limit})
	echo := s.guard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			textError(w, http.StatusTeapot, err.Error())
			return
		}
		seen = string(b)
		w.WriteHeader(http.StatusNoContent)
	}))
	ok := strings.Repeat("x", limit)
	if w := (secReq{method: "POST", path: "/restart", body: ok}).do(echo); w.Code != http.StatusNoContent || seen != ok {
		t.Errorf("body at the limit: %d %q, handler saw %d bytes", w.Code, w.Body, len(seen))
	}
	w := secReq{method: "POST", path: "/restart", body: ok + "y"}.do(echo)
	if w.Code != http.StatusRequestEntityTooLarge || !strings.Contains(w.Body.String(), "limit is 64 bytes") {
		t.Errorf("body over the limit: %d %q", w.Code, w.Body)
	}
	// Without Content-Length (chunked), the limit is found while reading.
	r := httptest.NewRequest("PATCH", "/config", io.MultiReader(strings.NewReader(ok), strings.NewReader(ok)))
	r.ContentLength = -1
	rec := httptest.NewRecorder()
	echo.ServeHTTP(rec, r)
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked body over the limit: %d %q", rec.Code, rec.Body)
	}
	// Safe methods get a limited reader too.
	r = httptest.NewRequest("GET", "/patroni", strings.NewReader(ok+ok))
	rec = httptest.NewRecorder()
	echo.ServeHTTP(rec, r)
	if rec.Code != http.StatusTeapot {
		t.Errorf("GET body over the limit read as %d", rec.Code)
	}
	// The default applies through the real handler.
	h := secServer(Options{})
	big := strings.Repeat("a", int(DefaultMaxBodyBytes)+1)
	if w := (secReq{method: "PATCH", path: "/config", body: big}).do(h); w.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("default limit: %d", w.Code)
	}
}

// --- TLS ---

type secPKI struct {
	dir                       string
	caFile, otherCAFile       string
	serverCert, serverKey     string
	clientCert, clientKey     string
	strangerCert, strangerKey string
	ca                        *certs.CA
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// newCA creates a CA and writes its certificate as dir/name.crt.
func newCA(t *testing.T, dir, name string) (*certs.CA, string) {
	t.Helper()
	ca, err := certs.NewCA(name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name+".crt")
	if err := os.WriteFile(path, ca.PEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	return ca, path
}

// issue writes a leaf certificate signed by ca and its key: a server certificate for 127.0.0.1,
// or a client-only one.
func issue(t *testing.T, dir, name string, server bool, ca *certs.CA) (string, string) {
	t.Helper()
	cert, key, err := ca.IssueFor(name, []string{"127.0.0.1"}, certs.Usage{Server: server, Client: !server}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cf, kf, err := certs.WriteIssued(dir, name, cert, key, true)
	if err != nil {
		t.Fatal(err)
	}
	return cf, kf
}

func newPKI(t *testing.T) *secPKI {
	t.Helper()
	p := &secPKI{dir: t.TempDir()}
	p.ca, p.caFile = newCA(t, p.dir, "ca")
	p.serverCert, p.serverKey = issue(t, p.dir, "server", true, p.ca)
	p.clientCert, p.clientKey = issue(t, p.dir, "client", false, p.ca)
	other, otherFile := newCA(t, p.dir, "other-ca")
	p.otherCAFile = otherFile
	p.strangerCert, p.strangerKey = issue(t, p.dir, "stranger", false, other)
	return p
}

// serveTLS runs the full API behind a TLS listener built by TLSConfig, as the node does.
func serveTLS(t *testing.T, p *secPKI, verify string) string {
	t.Helper()
	cfg, err := TLSConfig(p.serverCert, p.serverKey, p.caFile, verify)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := New(Options{Source: secPrimary(), Name: "node1", Scope: "demo", ClientCertRequired: verify == "optional" || verify == "required"})
	go func() { _ = srv.Serve(tls.NewListener(ln, cfg)) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return "https://" + ln.Addr().String()
}

func client(t *testing.T, cafile, cert, key string) *http.Client {
	t.Helper()
	cfg, err := ClientTLSConfig(cert, key, cafile)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Certificates) > 0 {
		// Present the certificate whatever CAs the server names, so that one from a foreign CA
		// reaches the server's verification instead of being withheld by the client.
		c := cfg.Certificates[0]
		cfg.Certificates = nil
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
}

func call(c *http.Client, method, url string) (int, string, error) {
	req, _ := http.NewRequest(method, url, strings.NewReader("{}"))
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

func TestTLSServer(t *testing.T) {
	p := newPKI(t)
	base := serveTLS(t, p, "none")
	if code, _, err := call(client(t, p.caFile, "", ""), "GET", base+"/patroni"); err != nil || code != 200 {
		t.Fatalf("GET over https: %d %v", code, err)
	}
	if _, _, err := call(client(t, p.otherCAFile, "", ""), "GET", base+"/patroni"); err == nil {
		t.Error("a client trusting another CA accepted the server")
	}
	// Plain HTTP on the TLS port gets nothing useful.
	if code, _, err := call(&http.Client{Timeout: 2 * time.Second}, "GET", "http://"+strings.TrimPrefix(base, "https://")+"/patroni"); err == nil && code == 200 {
		t.Error("plain HTTP answered 200 on the TLS port")
	}
	// TLS 1.1 is refused.
	old := client(t, p.caFile, "", "")
	old.Transport.(*http.Transport).TLSClientConfig.MaxVersion = tls.VersionTLS11
	if _, _, err := call(old, "GET", base+"/patroni"); err == nil {
		t.Error("TLS 1.1 accepted")
	}
	// With verify_client none, unsafe requests need no certificate.
	if code, body, err := call(client(t, p.caFile, "", ""), "POST", base+"/reload"); err != nil || code == 403 {
		t.Errorf("POST with verify_client none: %d %q %v", code, body, err)
	}
}

func TestTLSVerifyClientRequired(t *testing.T) {
	p := newPKI(t)
	base := serveTLS(t, p, "required")
	if _, _, err := call(client(t, p.caFile, "", ""), "GET", base+"/patroni"); err == nil {
		t.Error("a client without a certificate completed a request")
	}
	if _, _, err := call(client(t, p.caFile, p.strangerCert, p.strangerKey), "GET", base+"/patroni"); err == nil {
		t.Error("a certificate from another CA was accepted")
	}
	c := client(t, p.caFile, p.clientCert, p.clientKey)
	if code, _, err := call(c, "GET", base+"/patroni"); err != nil || code != 200 {
		t.Errorf("GET with a client certificate: %d %v", code, err)
	}
	if code, body, err := call(c, "POST", base+"/reload"); err != nil || code == 403 || code == 401 {
		t.Errorf("POST with a client certificate: %d %q %v", code, body, err)
	}
}

func TestTLSVerifyClientOptional(t *testing.T) {
	p := newPKI(t)
	base := serveTLS(t, p, "optional")
	anon := client(t, p.caFile, "", "")
	if code, _, err := call(anon, "GET", base+"/patroni"); err != nil || code != 200 {
		t.Errorf("GET without a certificate: %d %v", code, err)
	}
	for _, m := range []string{"POST", "PUT", "PATCH", "DELETE"} {
		if code, body, err := call(anon, m, base+"/config"); err != nil || code != 403 || body != "client certificate required" {
			t.Errorf("%s without a certificate: %d %q %v", m, code, body, err)
		}
	}
	if code, body, err := call(client(t, p.caFile, p.clientCert, p.clientKey), "POST", base+"/reload"); err != nil || code == 403 {
		t.Errorf("POST with a certificate: %d %q %v", code, body, err)
	}
	if _, _, err := call(client(t, p.caFile, p.strangerCert, p.strangerKey), "GET", base+"/patroni"); err == nil {
		t.Error("a certificate from another CA was accepted")
	}
}

func TestTLSConfigErrors(t *testing.T) {
	p := newPKI(t)
	garbage := filepath.Join(p.dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	combined := filepath.Join(p.dir, "combined.pem")
	cb, _ := os.ReadFile(p.serverCert)
	kb, _ := os.ReadFile(p.serverKey)
	if err := os.WriteFile(combined, append(cb, kb...), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := TLSConfig(combined, "", "", ""); err != nil {
		t.Errorf("certificate and key in one file: %v", err)
	}
	cases := []struct {
		name                        string
		cert, key, ca, verify, want string
	}{
		{"no certfile", "", "", "", "", "restapi.certfile"},
		{"bad verify", p.serverCert, p.serverKey, p.caFile, "always", "restapi.verify_client"},
		{"optional without ca", p.serverCert, p.serverKey, "", "optional", "restapi.cafile"},
		{"required without ca", p.serverCert, p.serverKey, "", "required", "restapi.cafile"},
		{"ca without certs", p.serverCert, p.serverKey, garbage, "required", "no PEM certificates"},
		{"mismatched pair", p.serverCert, p.clientKey, "", "", "restapi.certfile"},
		{"missing key", p.serverCert, filepath.Join(p.dir, "nope.key"), "", "", "restapi.certfile"},
	}
	for _, tc := range cases {
		if _, err := TLSConfig(tc.cert, tc.key, tc.ca, tc.verify); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to mention %q", tc.name, err, tc.want)
		}
	}
	cfg, err := TLSConfig(p.serverCert, p.serverKey, p.caFile, "required")
	if err != nil || cfg.MinVersion != tls.VersionTLS12 || cfg.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Errorf("required: %+v %v", cfg, err)
	}
	if cfg, _ := TLSConfig(p.serverCert, p.serverKey, p.caFile, "optional"); cfg.ClientAuth != tls.VerifyClientCertIfGiven {
		t.Errorf("optional: ClientAuth = %v", cfg.ClientAuth)
	}
}

func TestTLSCertificateReload(t *testing.T) {
	p := newPKI(t)
	base := serveTLS(t, p, "none")
	serial := func() string {
		t.Helper()
		resp, err := client(t, p.caFile, "", "").Get(base + "/patroni")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.TLS.PeerCertificates[0].SerialNumber.String()
	}
	fileSerial := func(path string) string {
		t.Helper()
		pair, err := tls.LoadX509KeyPair(path, strings.TrimSuffix(path, ".crt")+".key")
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(pair.Certificate[0])
		return c.SerialNumber.String()
	}
	if s, want := serial(), fileSerial(p.serverCert); s != want {
		t.Fatalf("serial %s, want %s", s, want)
	}
	// A renewal: new files moved into place, with a later modification time.
	cf, kf := issue(t, t.TempDir(), "server", true, p.ca)
	renewed := fileSerial(cf)
	later := time.Now().Add(time.Minute)
	for src, dst := range map[string]string{cf: p.serverCert, kf: p.serverKey} {
		if err := os.Rename(src, dst); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(dst, later, later); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(1100 * time.Millisecond)
	if s := serial(); s != renewed {
		t.Errorf("after renewal serial %s, want %s", s, renewed)
	}
	// A broken file keeps the previous pair in service.
	if err := os.WriteFile(p.serverKey, []byte("half written"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	if s := serial(); s != renewed {
		t.Errorf("after a broken key file serial %s, want %s", s, renewed)
	}
}
