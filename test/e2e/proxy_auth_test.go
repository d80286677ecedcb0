package e2e

import (
	"context"
	"crypto/md5" // #nosec G501 -- PostgreSQL's md5 password format, for the md5 user under test
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgvigil/pgvigil/internal/certs"
	"github.com/pgvigil/pgvigil/internal/localcluster"
)

// insertAfter returns a Prepare hook that puts text after the first occurrence of anchor in
// the node's configuration file.
func insertAfter(anchor, text string) func(n *localcluster.Node) error {
	return func(n *localcluster.Node) error {
		b, err := os.ReadFile(n.ConfigPath)
		if err != nil {
			return err
		}
		s := string(b)
		i := strings.Index(s, anchor)
		if i < 0 {
			return fmt.Errorf("%q not in %s", anchor, n.ConfigPath)
		}
		s = s[:i+len(anchor)] + text + s[i+len(anchor):]
		return os.WriteFile(n.ConfigPath, []byte(s), 0o600)
	}
}

// oneNode starts a single-member cluster whose configuration prepare edits, and returns its
// primary once it serves.
func oneNode(t *testing.T, prepare func(n *localcluster.Node) error) (*localcluster.Cluster, *localcluster.Node) {
	t.Helper()
	c := startClusterOptions(t, localcluster.Options{Nodes: 1, Prepare: prepare})
	ctx := context.Background()
	var p *localcluster.Node
	waitFor(t, "a primary", bootTimeout, func() bool {
		var err error
		p, err = c.Primary(ctx)
		return err == nil && p.Exec(ctx, "SELECT 1") == nil
	})
	return c, p
}

// userDSN is a connection string through the proxy's read-write listener.
func userDSN(px *localcluster.PGProxy, user, password string) string {
	host, port := hostPort(px.RW)
	return fmt.Sprintf("host=%s port=%s user=%s password=%s dbname=postgres sslmode=disable connect_timeout=10", host, port, user, password)
}

// connectAs opens a pgx connection through the proxy, with extra startup parameters.
func connectAs(ctx context.Context, px *localcluster.PGProxy, user, password string, params map[string]string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(userDSN(px, user, password))
	if err != nil {
		return nil, err
	}
	for k, v := range params {
		cfg.RuntimeParams[k] = v
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return pgx.ConnectConfig(ctx, cfg)
}

// loginError is the server error a failed login through the proxy ends with.
func loginError(t *testing.T, ctx context.Context, px *localcluster.PGProxy, user, password string, params map[string]string) *pgconn.PgError {
	t.Helper()
	conn, err := connectAs(ctx, px, user, password, params)
	if err == nil {
		conn.Close(ctx)
		t.Fatalf("%s logged in through the proxy with password %q and %v; want a refusal", user, password, params)
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		t.Fatalf("%s: login failed without a server error: %v", user, err)
	}
	return pe
}

// queryAs runs one query returning one text value on a new connection through the proxy.
func queryAs(ctx context.Context, px *localcluster.PGProxy, user, password, q string) (string, error) {
	conn, err := connectAs(ctx, px, user, password, nil)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	var s string
	err = conn.QueryRow(ctx, q).Scan(&s)
	return s, err
}

// poolServers counts the proxy's server connections for user (GET /pools).
func poolServers(px *localcluster.PGProxy, user string) (int, error) {
	r, err := http.Get("http://" + px.HTTP + "/pools")
	if err != nil {
		return 0, err
	}
	defer r.Body.Close()
	var rows []struct {
		User   string `json:"user"`
		Active int    `json:"server_active"`
		Idle   int    `json:"server_idle"`
	}
	if err := json.NewDecoder(r.Body).Decode(&rows); err != nil {
		return 0, err
	}
	n := 0
	for _, row := range rows {
		if row.User == user {
			n += row.Active + row.Idle
		}
	}
	return n, nil
}

// psqlWith runs psql through the proxy as the superuser with extra environment (PGOPTIONS).
func psqlWith(ctx context.Context, px *localcluster.PGProxy, env []string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	host, port := hostPort(px.RW)
	cmd := exec.CommandContext(ctx, "psql", append([]string{"-X", "-A", "-t", "-h", host, "-p", port, "-U", "postgres", "-d", "postgres"}, args...)...)
	cmd.Env = append(append(os.Environ(), "PGPASSWORD="+localcluster.SuperPass, "PGCONNECT_TIMEOUT=10"), env...)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// TestProxyAuth: users stored only as hashes log in to PostgreSQL through the proxy (SCRAM
// pass-through with a verifier copied from pg_authid, md5 with the md5 hash), auth_query
// finds users missing from the auth file on the primary and follows a password change at
// once, and startup parameters are tracked across servers in transaction mode, or refused.
func TestProxyAuth(t *testing.T) {
	ctx := context.Background()
	// md5_user's password is stored as md5, which a scram-sha-256 pg_hba line refuses.
	c, p := oneNode(t, insertAfter("\npostgresql:\n", "  pg_hba:\n  - local all all peer\n  - host all md5_user 127.0.0.1/32 md5\n  - host all all 127.0.0.1/32 scram-sha-256\n"))
	md5Sum := md5.Sum([]byte("md5-pw" + "md5_user")) // #nosec G401 -- the md5 password format under test
	md5Hash := "md5" + hex.EncodeToString(md5Sum[:])
	for _, q := range []string{
		"CREATE ROLE scram_user LOGIN PASSWORD 'scram-pw'",
		"CREATE ROLE md5_user LOGIN PASSWORD '" + md5Hash + "'",
		"CREATE ROLE aq_user LOGIN PASSWORD 'aq-pw-1'",
		"CREATE ROLE nopw_user LOGIN",
		"CREATE ROLE authq LOGIN PASSWORD 'authq-pw'",
		// The auth user reads pg_shadow through a SECURITY DEFINER function, as PgBouncer's
		// documentation recommends, instead of being a superuser.
		`CREATE FUNCTION public.user_lookup(u name) RETURNS TABLE (usename name, passwd text) LANGUAGE sql
		 SECURITY DEFINER SET search_path = pg_catalog AS $$ SELECT usename, passwd FROM pg_catalog.pg_shadow WHERE usename = u $$`,
		"REVOKE ALL ON FUNCTION public.user_lookup(name) FROM public",
		"GRANT EXECUTE ON FUNCTION public.user_lookup(name) TO authq",
		"CREATE TABLE t (id int PRIMARY KEY, who text)",
		"GRANT ALL ON t TO public",
		"CREATE SCHEMA app",
		"CREATE TABLE app.where_am_i AS SELECT 'app'::text AS s",
		"GRANT USAGE ON SCHEMA app TO public",
		"GRANT SELECT ON app.where_am_i TO public",
	} {
		if err := p.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	verifier := queryString(t, p, "SELECT rolpassword FROM pg_authid WHERE rolname = 'scram_user'")
	if !strings.HasPrefix(verifier, "SCRAM-SHA-256$") {
		t.Fatalf("scram_user's verifier: %q", verifier)
	}

	dir := workDir(t)
	users := filepath.Join(dir, "userlist.txt")
	list := fmt.Sprintf("%q %q\n%q %q\n%q %q\n", localcluster.Superuser, localcluster.SuperPass, "scram_user", verifier, "md5_user", md5Hash)
	pwFile := filepath.Join(dir, "authq.password")
	if os.WriteFile(users, []byte(list), 0o600) != nil || os.WriteFile(pwFile, []byte("authq-pw\n"), 0o600) != nil {
		t.Fatal("cannot write the auth files")
	}
	// pool_size 2 makes the proxy open server connections for users after their login, and
	// the single server of postgres/postgres runs every client's transactions in turn.
	px := startProxy(t, c, fmt.Sprintf(`pool_mode: transaction
pool_size: 2
query_wait_timeout: 20s
pools:
  postgres/postgres: {pool_size: 1}
auth:
  type: scram-sha-256
  file: %s
  user: authq
  password_file: %s
  query: SELECT usename, passwd FROM public.user_lookup($1)
  dbname: postgres
`, users, pwFile))
	pxMD5 := startProxy(t, c, fmt.Sprintf("pool_mode: transaction\npool_size: 2\nquery_wait_timeout: 20s\nauth:\n  type: md5\n  file: %s\n", users))

	// work runs transactions as user through the proxy on several connections at once, so
	// the pool opens server connections for them after their logins.
	work := func(t *testing.T, px *localcluster.PGProxy, user, password string, base int) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				conn, err := connectAs(ctx, px, user, password, nil)
				if err != nil {
					errs <- err
					return
				}
				defer conn.Close(ctx)
				for i := 0; i < 10; i++ {
					id := base + w*100 + i
					tx, err := conn.Begin(ctx)
					if err != nil {
						errs <- err
						return
					}
					var who string
					if _, err := tx.Exec(ctx, "INSERT INTO t VALUES ($1, current_user)", id); err != nil {
						errs <- fmt.Errorf("insert %d: %w", id, err)
						return
					}
					if err := tx.QueryRow(ctx, "SELECT who FROM t WHERE id = $1", id).Scan(&who); err != nil || who != user {
						errs <- fmt.Errorf("select %d: %q, %w", id, who, err)
						return
					}
					if err := tx.Commit(ctx); err != nil {
						errs <- err
						return
					}
				}
			}(w)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("%s through the proxy: %v", user, err)
		}
		if n, err := p.QueryInt(ctx, "SELECT count(*) FROM t WHERE who = $1", user); err != nil || n != 40 {
			t.Fatalf("%s's rows on the primary: %d, %v; want 40", user, n, err)
		}
		if n, err := p.QueryInt(ctx, "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND application_name = 'pgvigil-proxy'", user); err != nil || n < 1 {
			t.Fatalf("server sessions of the proxy as %s: %d, %v", user, n, err)
		}
	}

	t.Run("SCRAM verifier from pg_authid: pass-through", func(t *testing.T) {
		work(t, px, "scram_user", "scram-pw", 1000)
		if pe := loginError(t, ctx, px, "scram_user", "wrong", nil); pe.Code != "28P01" {
			t.Fatalf("wrong password: %v", pe)
		}
	})

	t.Run("md5 hash", func(t *testing.T) {
		work(t, pxMD5, "md5_user", "md5-pw", 2000)
		if pe := loginError(t, ctx, pxMD5, "md5_user", "wrong", nil); pe.Code != "28P01" {
			t.Fatalf("wrong password: %v", pe)
		}
		// Under auth.type md5 a user stored as a SCRAM verifier is asked for SCRAM.
		if who, err := queryAs(ctx, pxMD5, "scram_user", "scram-pw", "SELECT current_user"); err != nil || who != "scram_user" {
			t.Fatalf("scram_user under auth.type md5: %q, %v", who, err)
		}
	})

	t.Run("auth_query", func(t *testing.T) {
		work(t, px, "aq_user", "aq-pw-1", 3000)
		wrong := loginError(t, ctx, px, "aq_user", "wrong", nil)
		if wrong.Code != "28P01" || wrong.Message != `password authentication failed for user "aq_user"` {
			t.Fatalf("wrong password: %v", wrong)
		}
		// A user pg_shadow does not know, or one without a password, fails exactly the same way.
		for _, u := range []string{"ghost", "nopw_user"} {
			pe := loginError(t, ctx, px, u, "aq-pw-1", nil)
			if pe.Code != wrong.Code || pe.Severity != wrong.Severity || strings.ReplaceAll(pe.Message, u, "aq_user") != wrong.Message {
				t.Fatalf("%s: %v; want the same failure as a wrong password (%v)", u, pe, wrong)
			}
		}

		// A password change takes effect at the next login: nothing is cached.
		if err := p.Exec(ctx, "ALTER ROLE aq_user PASSWORD 'aq-pw-2'"); err != nil {
			t.Fatal(err)
		}
		if pe := loginError(t, ctx, px, "aq_user", "aq-pw-1", nil); pe.Code != "28P01" {
			t.Fatalf("old password after the change: %v", pe)
		}
		// The pooled server sessions were opened with the old keys; end them, so the next
		// transaction needs a server login with the keys of the new verifier.
		if err := p.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'aq_user'"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the proxy to drop aq_user's server connections", 30*time.Second, func() bool {
			n, err := poolServers(px, "aq_user")
			return err == nil && n == 0
		})
		if who, err := queryAs(ctx, px, "aq_user", "aq-pw-2", "SELECT current_user"); err != nil || who != "aq_user" {
			t.Fatalf("new password: %q, %v", who, err)
		}
		if n, err := poolServers(px, "aq_user"); err != nil || n < 1 {
			t.Fatalf("aq_user's server connections after the change: %d, %v", n, err)
		}

		// A failing lookup (here: the auth user may not read pg_shadow) refuses the client
		// with a clear FATAL, logs why, and the proxy serves on.
		broken := startProxy(t, c, fmt.Sprintf("auth:\n  type: scram-sha-256\n  file: %s\n  user: authq\n  password_file: %s\n", users, pwFile))
		pe := loginError(t, ctx, broken, "aq_user", "aq-pw-2", nil)
		if pe.Code != "28000" || pe.Message != `could not check the password of user "aq_user": auth_query failed (the proxy's log says why)` {
			t.Fatalf("failing auth_query: %v", pe)
		}
		if b, _ := os.ReadFile(broken.LogPath); !strings.Contains(string(b), "auth_query lookup failed") || !strings.Contains(string(b), "permission denied") {
			t.Fatalf("the proxy's log does not say why auth_query failed:\n%s", b)
		}
		if who, err := queryAs(ctx, broken, "scram_user", "scram-pw", "SELECT current_user"); err != nil || who != "scram_user" {
			t.Fatalf("a file user after a failed lookup: %q, %v", who, err)
		}
	})

	t.Run("startup parameters", func(t *testing.T) {
		// Two clients share the single server of postgres/postgres in transaction mode: each
		// sees its own startup settings, re-applied (or reset) whenever it gets the server.
		a, err := connectAs(ctx, px, "postgres", localcluster.SuperPass, map[string]string{"search_path": "app, public", "extra_float_digits": "0"})
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close(ctx)
		b, err := connectAs(ctx, px, "postgres", localcluster.SuperPass, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close(ctx)
		show := func(conn *pgx.Conn, q string) string {
			t.Helper()
			var s string
			if err := conn.QueryRow(ctx, q).Scan(&s); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
			return s
		}
		for i := 0; i < 5; i++ {
			if got := show(a, "SHOW search_path"); got != "app, public" {
				t.Fatalf("round %d: client a's search_path = %q", i, got)
			}
			if got := show(a, "SELECT s FROM where_am_i"); got != "app" {
				t.Fatalf("round %d: client a's unqualified table: %q", i, got)
			}
			if got := show(a, "SHOW extra_float_digits"); got != "0" {
				t.Fatalf("round %d: client a's extra_float_digits = %q", i, got)
			}
			if got := show(b, "SHOW search_path"); got != `"$user", public` {
				t.Fatalf("round %d: client b's search_path = %q (a's leaked?)", i, got)
			}
			if got := show(b, "SHOW extra_float_digits"); got != "1" {
				t.Fatalf("round %d: client b's extra_float_digits = %q", i, got)
			}
		}
		// libpq's options (PGOPTIONS) with -c settings.
		if out, err := psqlWith(ctx, px, []string{"PGOPTIONS=-c search_path=app"}, "-c", "SELECT s FROM where_am_i"); err != nil || out != "app" {
			t.Fatalf("psql with PGOPTIONS search_path: %q, %v", out, err)
		}
		// Anything else is refused at startup, as PgBouncer does.
		pe := loginError(t, ctx, px, "postgres", localcluster.SuperPass, map[string]string{"statement_timeout": "5s"})
		if pe.Code != "08P01" || pe.Message != "unsupported startup parameter: statement_timeout" {
			t.Fatalf("unknown startup parameter: %v", pe)
		}
		for opts, want := range map[string]string{"-c work_mem=1MB": "unsupported startup parameter: work_mem", "-B 5": "unsupported startup parameter: options"} {
			if out, err := psqlWith(ctx, px, []string{"PGOPTIONS=" + opts}, "-c", "SELECT 1"); err == nil || !strings.Contains(out, want) {
				t.Fatalf("psql with PGOPTIONS %q: %q, %v; want %q", opts, out, err, want)
			}
		}
	})

	for _, l := range []*localcluster.PGProxy{px, pxMD5} {
		b, err := os.ReadFile(l.LogPath)
		if err != nil {
			t.Fatal(err)
		}
		for _, pw := range []string{"scram-pw", "md5-pw", "aq-pw-1", "aq-pw-2", "authq-pw"} {
			if strings.Contains(string(b), pw) {
				t.Errorf("the proxy's log %s holds the password %q", l.LogPath, pw)
			}
		}
	}
}

// TestProxyServerTLS: server_tls_sslmode keeps libpq's meaning. The server's certificate names
// localhost only, while the proxy dials 127.0.0.1, and pg_hba refuses the user without TLS:
// disable fails, allow retries with TLS, prefer and require encrypt without checking, a CA
// file makes require check the chain (as verify-ca), verify-ca checks the chain but not the
// name, and verify-full refuses the certificate for the name.
func TestProxyServerTLS(t *testing.T) {
	ctx := context.Background()
	dir := workDir(t)
	for _, d := range []string{"good", "other"} {
		// #nosec G301 -- PostgreSQL runs as another OS user and reads its certificate here
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	good, err := certs.WriteSet(filepath.Join(dir, "good"), "pg", []string{"localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := certs.WriteSet(filepath.Join(dir, "other"), "other", []string{"localhost", "127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, p := oneNode(t, insertAfter("\npostgresql:\n", fmt.Sprintf(`  ssl:
    cert_file: %s
    key_file: %s
  pg_hba:
  - local all all peer
  - hostnossl all tlsuser 127.0.0.1/32 reject
  - host all all 127.0.0.1/32 scram-sha-256
`, good.Cert, good.Key)))
	if err := p.Exec(ctx, "CREATE ROLE tlsuser LOGIN PASSWORD 'tls-pw'"); err != nil {
		t.Fatal(err)
	}
	users := filepath.Join(dir, "userlist.txt")
	if err := os.WriteFile(users, []byte(`"tlsuser" "tls-pw"`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mode, ca string
		wantErr  string // empty: the session is encrypted
	}{
		{mode: "disable", wantErr: "pg_hba.conf rejects connection"},
		{mode: "allow"},
		{mode: "prefer"},
		{mode: "require"},
		{mode: "require", ca: other.CA, wantErr: "certificate signed by unknown authority"},
		{mode: "verify-ca", ca: good.CA},
		{mode: "verify-ca", ca: other.CA, wantErr: "certificate signed by unknown authority"},
		{mode: "verify-full", ca: good.CA, wantErr: "cannot validate certificate for 127.0.0.1"},
	} {
		extra := fmt.Sprintf("query_wait_timeout: 2s\nserver_tls_sslmode: %s\nauth:\n  type: scram-sha-256\n  file: %s\n", tc.mode, users)
		if tc.ca != "" {
			extra += "server_tls_ca_file: " + tc.ca + "\n"
		}
		px := startProxy(t, c, extra)
		got, err := queryAs(ctx, px, "tlsuser", "tls-pw", "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
		px.Stop()
		t.Logf("sslmode %s (CA %q): %q, %v", tc.mode, tc.ca, got, err)
		switch {
		case tc.wantErr == "" && (err != nil || got != "true"):
			t.Errorf("sslmode %s (CA %q): ssl = %q, %v; want an encrypted session", tc.mode, tc.ca, got, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("sslmode %s (CA %q): ssl = %q, %v; want an error with %q", tc.mode, tc.ca, got, err, tc.wantErr)
		}
		if b, _ := os.ReadFile(px.LogPath); strings.Contains(string(b), "tls-pw") {
			t.Errorf("sslmode %s: the proxy's log holds the password", tc.mode)
		}
	}
}
