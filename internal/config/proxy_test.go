package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgvigil/pgvigil/internal/certs"
)

const minimalProxy = `scope: demo
etcd3:
  hosts: 127.0.0.1:2379
listen:
  read_write: 127.0.0.1:6432
auth:
  type: trust
`

func TestParseProxyDefaults(t *testing.T) {
	p, err := ParseProxy([]byte(minimalProxy + "pool_mode: session\nquery_wait_timeout: 30\nserver_idle_timeout: 90s\npools:\n  app/bob:\n    pool_size: 5\n  app:\n    pool_mode: transaction\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p.PoolMode != PoolSession || p.QueryWaitTimeout.D() != 30*time.Second || p.ServerIdleTimeout.D() != 90*time.Second {
		t.Fatalf("decoded %+v", p)
	}
	if p.PoolSize != 20 || p.MaxClientConn != 10000 || p.ReadOnly.Balance != "round-robin" || p.Namespace != "/service/" {
		t.Fatalf("defaults: %+v", p)
	}
	if m, s := p.PoolFor("app", "bob"); m != PoolTransaction || s != 5 {
		t.Fatalf("PoolFor(app, bob) = %s %d", m, s)
	}
	if m, s := p.PoolFor("other", "bob"); m != PoolSession || s != 20 {
		t.Fatalf("PoolFor(other, bob) = %s %d", m, s)
	}
}

func TestParseProxyErrorsNameTheKey(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"listen: {read_write: 127.0.0.1:1}\netcd3: {hosts: a:1}\nauth: {type: trust}\n", "scope: required"},
		{strings.Replace(minimalProxy, "127.0.0.1:2379", `""`, 1), "etcd3.hosts: required"},
		{strings.Replace(minimalProxy, "127.0.0.1:6432", "nowhere", 1), `listen.read_write: want host:port, got "nowhere"`},
		{minimalProxy + "pool_mode: statement\n", `pool_mode: must be session or transaction, got "statement"`},
		{minimalProxy + "pool_size: 0\n", "pool_size: must be at least 1, got 0"},
		{minimalProxy + "query_wait_timeout: -1s\n", "query_wait_timeout: must be positive"},
		{minimalProxy + "query_wait_timeout: soon\n", `"soon" is not a duration`},
		{minimalProxy + "server_tls_sslmode: maybe\n", "server_tls_sslmode: must be one of"},
		{minimalProxy + "read_only: {balance: random}\n", "read_only.balance: must be round-robin or least-connections"},
		{minimalProxy + "read_only: {max_lag: -5}\n", "read_only.max_lag: must not be negative"},
		{minimalProxy + "tls: {cert: a.pem}\n", "tls: cert and key go together"},
		{minimalProxy + "client_tls_sslmode: require\n", "client_tls_sslmode: require needs a certificate to offer"},
		{minimalProxy + "tls: {cert: a.pem, key: a.key}\nclient_tls_sslmode: verify-full\n", `client_tls_sslmode: must be one of disable, allow, prefer, require; got "verify-full"`},
		{minimalProxy + "restapi: {keyfile: k.pem}\n", "restapi.certfile: required when restapi.keyfile is set"},
		{minimalProxy + "restapi: {ca_file: ca.pem}\n", "field ca_file not found"},
		{minimalProxy + "pools: {app: {pool_mode: nope}}\n", "pools.app.pool_mode: must be session or transaction"},
		{minimalProxy + "max_message_size: 10\n", "max_message_size: must be at least 1024"},
		{minimalProxy + "max_message_size: 2147483648\n", "max_message_size: must be at most 1 GiB"},
		{minimalProxy + "threads: -1\n", "threads: must be between 0 (every core) and 1024, got -1"},
		{minimalProxy + "colour: blue\n", "field colour not found"},
		{strings.Replace(minimalProxy, "type: trust", "type: scram-sha-256", 1), "auth.file: required with auth.type scram-sha-256"},
		{strings.Replace(minimalProxy, "type: trust", "type: password", 1), `auth.type: must be scram-sha-256, md5 or trust; got "password"`},
		{strings.Replace(minimalProxy, "type: trust", "type: trust\n  user: pgbouncer", 1), "auth.user: auth_query needs auth.type scram-sha-256 or md5"},
		{strings.Replace(minimalProxy, "type: trust", "type: scram-sha-256\n  user: pgbouncer", 1), "auth.password_file: required when auth.user is set and auth.file is not"},
		{strings.Replace(minimalProxy, "type: trust", "type: md5\n  file: u.txt\n  user: pgbouncer\n  query: SELECT usename, passwd FROM pg_shadow WHERE usename = 'x'", 1), "auth.query: must take the user name as the parameter $1"},
		{strings.Replace(minimalProxy, "type: trust", "type: md5\n  file: u.txt\n  user: pgbouncer\n  query: ' '", 1), "auth.query: must not be empty"},
		{strings.Replace(minimalProxy, "type: trust", "type: md5\n  file: u.txt\n  password_file: pw", 1), "auth.password_file: is the password of auth.user, which is not set"},
		{strings.Replace(minimalProxy, "type: trust", "type: md5\n  file: u.txt\n  dbname: postgres", 1), "auth.dbname: is where auth.query runs as auth.user, which is not set"},
		{strings.Replace(minimalProxy, "type: trust", "type: md5\n  file: u.txt\n  colour: blue", 1), "field colour not found"},
		{minimalProxy + "track_extra_parameters: [search_path, \"bad name\"]\n", `track_extra_parameters: "bad name" is not a parameter name`},
		{minimalProxy + "track_extra_parameters: options\n", `track_extra_parameters: "options" is part of the connection`},
		{minimalProxy + "ignore_startup_parameters: [user]\n", `ignore_startup_parameters: "user" cannot be ignored`},
		{minimalProxy + "ignore_startup_parameters: [Search_Path]\n", `ignore_startup_parameters: "Search_Path" is also in track_extra_parameters`},
		{minimalProxy + "ignore_startup_parameters: {a: b}\n", "want a comma-separated string or a list of names"},
	} {
		_, err := ParseProxy([]byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.yaml, err, tc.want)
		}
	}
}

func TestLoadProxyResolvesAndChecksFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "proxy.yaml")
	cfg := strings.Replace(minimalProxy, "type: trust", "type: md5\n  file: users.txt", 1)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadProxy(path); err == nil || !strings.Contains(err.Error(), "auth.file: cannot read") {
		t.Fatalf("missing auth file: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "users.txt"), []byte(`"a" "b"`), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := LoadProxy(path)
	if err != nil {
		t.Fatal(err)
	}
	if p.Auth.File != filepath.Join(dir, "users.txt") {
		t.Fatalf("auth.file = %s, want it next to the configuration", p.Auth.File)
	}
}

func TestParseProxyClientTLSDefault(t *testing.T) {
	for _, tc := range []struct{ extra, want string }{
		{"", "disable"},
		{"tls: {cert: a.pem, key: a.key}\n", "prefer"},
		{"tls: {cert: a.pem, key: a.key}\nclient_tls_sslmode: require\n", "require"},
		{"tls: {cert: a.pem, key: a.key}\nclient_tls_sslmode: disable\n", "disable"},
	} {
		p, err := ParseProxy([]byte(minimalProxy + tc.extra))
		if err != nil {
			t.Fatal(err)
		}
		if p.ClientTLSSSLMode != tc.want {
			t.Errorf("%q: client_tls_sslmode %q, want %q", tc.extra, p.ClientTLSSSLMode, tc.want)
		}
	}
}

// TestLoadProxyChecksRESTAPIFiles: the restapi files resolve next to the configuration, must
// exist and parse, and every error names the key.
func TestLoadProxyChecksRESTAPIFiles(t *testing.T) {
	dir := t.TempDir()
	ca, err := certs.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Save(dir, true); err != nil {
		t.Fatal(err)
	}
	c, k, err := ca.IssueFor("proxy", []string{"127.0.0.1"}, certs.Usage{Client: true}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := certs.WriteIssued(dir, "proxy", c, k, true); err != nil {
		t.Fatal(err)
	}
	expired, ek, _ := ca.IssueFor("old", []string{"127.0.0.1"}, certs.Usage{Client: true}, -time.Minute)
	if _, _, err := certs.WriteIssued(dir, "old", expired, ek, true); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "empty.pem"), []byte("not PEM\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	load := func(restapi string) error {
		t.Helper()
		path := filepath.Join(dir, "proxy.yaml")
		if err := os.WriteFile(path, []byte(minimalProxy+restapi), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadProxy(path)
		return err
	}
	if err := load("restapi: {cafile: ca.crt, certfile: proxy.crt, keyfile: proxy.key}\n"); err != nil {
		t.Fatalf("valid restapi section refused: %v", err)
	}
	for _, tc := range []struct{ restapi, want string }{
		{"restapi: {cafile: missing.crt}\n", "restapi.cafile: cannot read"},
		{"restapi: {cafile: empty.pem}\n", "restapi.cafile: " + filepath.Join(dir, "empty.pem") + " holds no PEM certificates"},
		{"restapi: {certfile: proxy.crt}\n", "restapi.keyfile: required: restapi.certfile (" + filepath.Join(dir, "proxy.crt") + ") holds no private key"},
		{"restapi: {certfile: proxy.crt, keyfile: missing.key}\n", "restapi.keyfile: cannot read"},
		{"restapi: {certfile: proxy.crt, keyfile: old.key}\n", "restapi.certfile: certificate " + filepath.Join(dir, "proxy.crt") + " and key"},
		{"restapi: {certfile: old.crt, keyfile: old.key}\n", "restapi.certfile: certificate " + filepath.Join(dir, "old.crt") + " (old) expired on"},
		{"server_tls_ca_file: empty.pem\n", "server_tls_ca_file: " + filepath.Join(dir, "empty.pem") + " holds no PEM certificates"},
	} {
		if err := load(tc.restapi); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.restapi, err, tc.want)
		}
	}
}

func TestParseProxyAuthQueryAndStartupParameters(t *testing.T) {
	p, err := ParseProxy([]byte(minimalProxy))
	if err != nil {
		t.Fatal(err)
	}
	if p.Auth.Query != DefaultAuthQuery || p.Auth.User != "" {
		t.Fatalf("auth defaults: %+v", p.Auth)
	}
	if fmt.Sprint(p.TrackExtraParameters) != "[search_path extra_float_digits]" || len(p.IgnoreStartupParameters) != 0 {
		t.Fatalf("startup parameter defaults: %q %q", p.TrackExtraParameters, p.IgnoreStartupParameters)
	}
	p, err = ParseProxy([]byte(strings.Replace(minimalProxy, "type: trust", "type: scram-sha-256\n  user: pgbouncer\n  password_file: pw\n  dbname: postgres", 1) +
		"track_extra_parameters: search_path, myapp.tenant\nignore_startup_parameters: [geqo, options]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Auth.User != "pgbouncer" || p.Auth.DBName != "postgres" || p.Auth.Query != DefaultAuthQuery {
		t.Fatalf("auth: %+v", p.Auth)
	}
	if fmt.Sprint(p.TrackExtraParameters) != "[search_path myapp.tenant]" || fmt.Sprint(p.IgnoreStartupParameters) != "[geqo options]" {
		t.Fatalf("startup parameters: %q %q", p.TrackExtraParameters, p.IgnoreStartupParameters)
	}
	if p, err = ParseProxy([]byte(minimalProxy + "track_extra_parameters: []\n")); err != nil || len(p.TrackExtraParameters) != 0 {
		t.Fatalf("an empty list replaces the default: %q, %v", p.TrackExtraParameters, err)
	}
}

func TestLoadProxyResolvesPasswordFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "proxy.yaml")
	cfg := strings.Replace(minimalProxy, "type: trust", "type: scram-sha-256\n  user: pgbouncer\n  password_file: auth.pw", 1)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadProxy(path); err == nil || !strings.Contains(err.Error(), "auth.password_file: cannot read") {
		t.Fatalf("missing password file: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "auth.pw"), []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := LoadProxy(path)
	if err != nil {
		t.Fatal(err)
	}
	if p.Auth.PasswordFile != filepath.Join(dir, "auth.pw") {
		t.Fatalf("auth.password_file = %s, want it next to the configuration", p.Auth.PasswordFile)
	}
	if err := os.WriteFile(path, []byte(cfg+"server_tls_ca_file: ca.pem\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadProxy(path); err == nil || !strings.Contains(err.Error(), "server_tls_ca_file: cannot read") {
		t.Fatalf("missing CA file: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadProxy(path); err == nil || !strings.Contains(err.Error(), "server_tls_ca_file: "+filepath.Join(dir, "ca.pem")+" holds no PEM certificate") {
		t.Fatalf("CA file without a certificate: %v", err)
	}
}
