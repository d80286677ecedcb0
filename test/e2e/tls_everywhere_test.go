package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgvigil/pgvigil/internal/api"
	"github.com/pgvigil/pgvigil/internal/certs"
	"github.com/pgvigil/pgvigil/internal/localcluster"
)

// transcript collects everything the TLS test sees pgvigil say — CLI output, REST responses —
// so that the end can check none of it holds a configured password; node and PostgreSQL logs
// are added from their files.
type transcript struct{ b strings.Builder }

func (tr *transcript) add(what, s string) { fmt.Fprintf(&tr.b, "=== %s\n%s\n", what, s) }

// TestTLSEverywhere: etcd with client certificates, the REST API over HTTPS with client
// verification and Basic auth, PostgreSQL with SSL, replication over verify-full with a client
// certificate, the proxy requiring TLS from clients and using it to PostgreSQL and the REST
// APIs. The cluster comes up, switches over through the CLI over HTTPS and fails over, and the
// proxy follows both; clients without the CA or with a foreign certificate are refused;
// expired certificates give a clear error; the API certificate rotates on SIGHUP; and no
// password ever shows.
func TestTLSEverywhere(t *testing.T) {
	ctx := context.Background()
	c := startClusterOptions(t, localcluster.Options{Nodes: 3, TLS: true, ReplicationCertAuth: true})
	waitFor(t, "all members streaming over TLS", bootTimeout, func() bool { return c.Streaming(ctx) })
	p, err := c.Primary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tr := &transcript{}
	secrets := []string{localcluster.SuperPass, localcluster.ReplPass, localcluster.APIPass}
	ca := c.CAFile

	t.Run("replication uses TLS and the server is configured", func(t *testing.T) {
		waitFor(t, "two walsenders over TLS", failoverTimeout, func() bool {
			n, err := p.QueryInt(ctx, `SELECT count(*) FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) WHERE s.ssl`)
			return err == nil && n == 2
		})
		for q, want := range map[string]string{"SHOW ssl": "on", "SHOW password_encryption": "scram-sha-256",
			"SHOW ssl_min_protocol_version": "TLSv1.2"} {
			if got := queryString(t, p, q); got != want {
				t.Errorf("%s = %q, want %q", q, got, want)
			}
		}
		// The agent's own session (application pgvigil) is over TLS too: pg_hba has no plain TCP line.
		if n, err := p.QueryInt(ctx, `SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'pgvigil' AND NOT s.ssl`); err != nil || n != 0 {
			t.Errorf("plain-text agent sessions: %d (%v)", n, err)
		}
		hba, err := os.ReadFile(filepath.Join(p.DataDir, "pg_hba.conf"))
		if err != nil || !strings.Contains(string(hba), "hostssl replication replicator 0.0.0.0/0 cert") ||
			strings.Contains(string(hba), "\nhost ") {
			t.Errorf("pg_hba.conf:\n%s (%v)", hba, err)
		}
		for path, want := range map[string]os.FileMode{p.DataDir: 0o700, p.TLS.PGKey: 0o600, p.TLS.ReplKey: 0o600,
			filepath.Join(filepath.Dir(p.DataDir), "pgpass."+p.Name): 0o600} {
			fi, err := os.Stat(path)
			if err != nil || fi.Mode().Perm() != want {
				t.Errorf("%s: mode %v (%v), want %04o", path, fi.Mode().Perm(), err, want)
				continue
			}
			if st := fi.Sys().(*syscall.Stat_t); os.Geteuid() == 0 && st.Uid == 0 {
				t.Errorf("%s is owned by root; PostgreSQL needs it to be its own", path)
			}
		}
	})

	t.Run("clients without the CA or with a foreign certificate are refused", func(t *testing.T) {
		// PostgreSQL: verify-full needs the CA; plain text has no pg_hba line.
		for _, dsn := range []string{
			fmt.Sprintf("host=127.0.0.1 port=%d user=postgres password=%s dbname=postgres sslmode=verify-full connect_timeout=3", p.PGPort, localcluster.SuperPass),
			fmt.Sprintf("host=127.0.0.1 port=%d user=postgres password=%s dbname=postgres sslmode=disable connect_timeout=3", p.PGPort, localcluster.SuperPass),
		} {
			conn, err := pgx.Connect(ctx, dsn)
			if err == nil {
				conn.Close(ctx)
				t.Errorf("connected without TLS or without the CA: %s", strings.Replace(dsn, localcluster.SuperPass, "…", 1))
				continue
			}
			tr.add("pgx refusal", err.Error())
		}
		// The REST API: the system roots do not know our CA.
		if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(p.APIURL() + "/patroni"); err == nil {
			resp.Body.Close()
			t.Error("REST API answered a client without the CA")
		} else if !strings.Contains(err.Error(), "certificate signed by unknown authority") {
			t.Errorf("REST API without the CA: %v", err)
		}
		// A certificate from another CA: refused by the API and by etcd.
		dir := t.TempDir()
		other, err := certs.NewCA("another CA", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		cp, kp, _ := other.Issue("intruder", []string{"127.0.0.1"}, time.Hour)
		cf, kf, err := certs.WriteIssued(dir, "intruder", cp, kp, true)
		if err != nil {
			t.Fatal(err)
		}
		tc, err := api.ClientTLSConfig(cf, kf, ca)
		if err != nil {
			t.Fatal(err)
		}
		// Go's client would quietly leave out a certificate the server's CA list does not
		// cover; present it regardless, as a hostile client would.
		foreign := tc.Certificates[0]
		tc.Certificates = nil
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &foreign, nil }
		cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
		if resp, err := cl.Post(p.APIURL()+"/restart", "application/json", strings.NewReader("{}")); err == nil {
			resp.Body.Close()
			t.Errorf("REST API accepted a client certificate from another CA (status %d)", resp.StatusCode)
		} else {
			tr.add("REST with a foreign certificate", err.Error())
		}
		r := runCtl(t, "", "list", "--dcs-url", "etcds://"+c.Etcd.Endpoints()[0], "--scope", localcluster.DefaultScope,
			"--etcd-cacert", ca, "--etcd-cert", cf, "--etcd-key", kf)
		tr.add("list with a foreign certificate", r.String())
		if r.code == 0 {
			t.Errorf("etcd accepted a client certificate from another CA:\n%s", r)
		}
	})

	// The proxy as TLS everywhere configures it (localcluster.StartProxy): clients must use TLS
	// and verify it against the cluster CA; it logs in to PostgreSQL over verify-full and asks
	// the REST APIs over mutual TLS. It starts now so that it follows the switchover and the
	// failover below.
	px := startProxy(t, c, "pool_mode: transaction\n")
	// writeThroughProxy writes through the proxy's read-write listener until the write lands on
	// want (the proxy may still be following a leader change); it fails the test otherwise.
	writeThroughProxy := func(t *testing.T, want *localcluster.Node) {
		t.Helper()
		var last string
		ok := localcluster.Wait(ctx, failoverTimeout, 200*time.Millisecond, func() bool {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			conn, err := pgx.Connect(cctx, px.DSN(false))
			if err != nil {
				last = err.Error()
				return false
			}
			defer conn.Close(ctx)
			var port int
			err = conn.QueryRow(cctx, "INSERT INTO tls_proxy VALUES (1) RETURNING inet_server_port()").Scan(&port)
			if err != nil {
				last = err.Error()
				return false
			}
			last = fmt.Sprintf("the write landed on port %d", port)
			return port == want.PGPort
		})
		if !ok {
			t.Fatalf("no write through the proxy landed on %s (port %d) within %s: %s", want.Name, want.PGPort, failoverTimeout, last)
		}
	}

	t.Run("the proxy with TLS everywhere", func(t *testing.T) {
		// Read-write: the client's link to the proxy and the proxy's link to PostgreSQL are TLS.
		conn, err := pgx.Connect(ctx, px.DSN(false))
		if err != nil {
			t.Fatalf("verify-full through the proxy: %v", err)
		}
		if _, ok := conn.PgConn().Conn().(*tls.Conn); !ok {
			t.Error("the client's connection to the proxy is not TLS")
		}
		var serverSSL bool
		if err := conn.QueryRow(ctx, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&serverSSL); err != nil || !serverSSL {
			t.Errorf("the proxy's server connection uses SSL: %v (%v)", serverSSL, err)
		}
		if _, err := conn.Exec(ctx, "CREATE TABLE tls_proxy (v int)"); err != nil {
			t.Fatal(err)
		}
		conn.Close(ctx)
		writeThroughProxy(t, p)

		// Read-only: once the proxy counts the replicas, reads go to one of them, over TLS too.
		waitFor(t, "the proxy's read-only pool", failoverTimeout, func() bool {
			st, err := px.Status(ctx)
			return err == nil && len(st.Replicas) == 2
		})
		ro, err := pgx.Connect(ctx, px.DSN(true))
		if err != nil {
			t.Fatalf("verify-full through the read-only listener: %v", err)
		}
		var recovery, roSSL bool
		if err := ro.QueryRow(ctx, "SELECT pg_is_in_recovery(), (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())").Scan(&recovery, &roSSL); err != nil ||
			!recovery || !roSSL {
			t.Errorf("read-only listener: in recovery %v, SSL %v (%v)", recovery, roSSL, err)
		}
		ro.Close(ctx)

		// Without the CA the handshake fails: another CA's root, or the system's roots.
		otherCA, err := certs.NewCA("another CA", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		otherRoot := filepath.Join(t.TempDir(), "other-ca.crt")
		if err := os.WriteFile(otherRoot, otherCA.PEM(), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, dsn := range []string{
			strings.Replace(px.DSN(false), "sslrootcert="+ca, "sslrootcert="+otherRoot, 1),
			strings.Replace(px.DSN(true), " sslrootcert="+ca, "", 1),
		} {
			if !strings.Contains(dsn, "sslmode=verify-full") || strings.Contains(dsn, ca) {
				t.Fatalf("test DSN still names the cluster CA: %s", dsn)
			}
			conn, err := pgx.Connect(ctx, dsn)
			if err == nil {
				conn.Close(ctx)
				t.Errorf("connected to the proxy without the CA: %s", strings.Replace(dsn, localcluster.SuperPass, "…", 1))
				continue
			}
			tr.add("proxy without the CA", err.Error())
			if !strings.Contains(err.Error(), "certificate signed by unknown authority") {
				t.Errorf("proxy without the CA: %v, want an unknown-authority handshake failure", err)
			}
		}
		// Without TLS the proxy refuses the client as PostgreSQL's hostssl does (28000).
		_, err = pgx.Connect(ctx, strings.Replace(px.DSN(false), "sslmode=verify-full sslrootcert="+ca, "sslmode=disable", 1))
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "28000" || !strings.Contains(pe.Message, "client_tls_sslmode is require") {
			t.Errorf("plain client through the proxy: %v, want FATAL 28000 naming client_tls_sslmode", err)
		} else {
			tr.add("proxy without TLS", err.Error())
		}
	})

	t.Run("expired certificates give a clear error", func(t *testing.T) {
		dir := t.TempDir()
		cp, kp, err := c.CA.Issue(p.Name, []string{"127.0.0.1"}, -30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		cf, kf, err := certs.WriteIssued(dir, "expired", cp, kp, true)
		if err != nil {
			t.Fatal(err)
		}
		r := runCtl(t, "", "list", "--dcs-url", "etcds://"+c.Etcd.Endpoints()[0], "--scope", localcluster.DefaultScope,
			"--etcd-cacert", ca, "--etcd-cert", cf, "--etcd-key", kf)
		tr.add("list with an expired certificate", r.String())
		mustRefuse(t, r, "certificate "+cf+" ("+p.Name+") expired on ")
		// A node whose REST API certificate expired refuses to start, naming the key and the date.
		conf, err := os.ReadFile(p.ConfigPath)
		if err != nil {
			t.Fatal(err)
		}
		bad := filepath.Join(dir, "node.yaml")
		if err := os.WriteFile(bad, []byte(strings.Replace(string(conf), "certfile: "+p.TLS.Cert+"\n  keyfile: "+p.TLS.Key,
			"certfile: "+cf+"\n  keyfile: "+kf, 1)), 0o600); err != nil {
			t.Fatal(err)
		}
		r = runCtl(t, "", "node", "-c", bad, "--validate")
		tr.add("node with an expired API certificate", r.String())
		mustRefuse(t, r, "restapi.certfile: certificate "+cf+" ("+p.Name+") expired on ")
	})

	t.Run("switchover through the CLI over HTTPS", func(t *testing.T) {
		target := c.Nodes[0]
		if target == p {
			target = c.Nodes[1]
		}
		r := runCtl(t, "", "switchover", "-c", p.ConfigPath, "--candidate", target.Name, "--force")
		tr.add("switchover", r.String())
		mustSucceed(t, r)
		waitFor(t, target.Name+" primary after the switchover", failoverTimeout, func() bool {
			q, err := c.Primary(ctx)
			return err == nil && q == target
		})
		waitFor(t, "all members streaming after the switchover", bootTimeout, func() bool { return c.Streaming(ctx) })
		p = target
		// The proxy confirmed the new primary through its REST API over mutual TLS.
		writeThroughProxy(t, p)
	})

	t.Run("failover when the primary dies", func(t *testing.T) {
		old := p
		if err := old.Crash(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "a new primary", failoverTimeout, func() bool {
			q, err := c.Primary(ctx)
			if err == nil && q != old {
				p = q
				return true
			}
			return false
		})
		writeThroughProxy(t, p)
		if err := c.StartNode(old); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the old primary rejoins over TLS", bootTimeout, func() bool { return c.Streaming(ctx) })
		// It ran read-write, so it came back through pg_rewind, whose connection is verify-full too.
		if log, _ := os.ReadFile(old.LogPath); !strings.Contains(string(log), "action=rewind") {
			t.Errorf("%s rejoined without a rewind; its log:\n%s", old.Name, log)
		}
	})

	t.Run("SIGHUP rotates the REST API and PostgreSQL certificates", func(t *testing.T) {
		n := c.Nodes[2]
		pid := n.AgentPID()
		before := peerSerial(t, n)
		if want := fileSerial(t, n.TLS.Cert); before != want {
			t.Fatalf("serving serial %s, file holds %s", before, want)
		}
		// The renewal expires within the 14-day warning window, which /patroni must then report.
		cp, kp, err := c.CA.Issue(n.Name, []string{"127.0.0.1", "localhost"}, 10*24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := certs.WriteIssued(filepath.Dir(n.TLS.Cert), n.Name, cp, kp, true); err != nil {
			t.Fatal(err)
		}
		renewed := fileSerial(t, n.TLS.Cert)
		// PostgreSQL's pair too, as a new root-owned key file that the agent must hand to the
		// postgres user before PostgreSQL can load it.
		pgBefore := pgSerial(t, n)
		if pgBefore != fileSerial(t, n.TLS.PGCert) {
			t.Fatalf("PostgreSQL serves serial %s, file holds %s", pgBefore, fileSerial(t, n.TLS.PGCert))
		}
		cp, kp, err = c.CA.IssueFor(n.Name, []string{"127.0.0.1", "localhost"}, certs.Usage{Server: true}, 30*24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{n.TLS.PGCert, n.TLS.PGKey} {
			if err := os.Remove(f); err != nil {
				t.Fatal(err)
			}
		}
		if _, _, err := certs.WriteIssued(filepath.Dir(n.TLS.PGCert), n.Name+"-postgresql", cp, kp, false); err != nil {
			t.Fatal(err)
		}
		pgRenewed := fileSerial(t, n.TLS.PGCert)
		if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "new connections see the renewed certificate", 30*time.Second, func() bool { return peerSerial(t, n) == renewed })
		waitFor(t, "new PostgreSQL connections see the renewed certificate", 30*time.Second, func() bool { return pgSerial(t, n) == pgRenewed })
		if fi, err := os.Stat(n.TLS.PGKey); err != nil || fi.Sys().(*syscall.Stat_t).Uid == 0 || fi.Mode().Perm() != 0o600 {
			t.Errorf("renewed PostgreSQL key not handed to the postgres user with mode 0600: %v %v", fi.Mode(), err)
		}
		if n.AgentPID() != pid || !n.Running() {
			t.Fatalf("the agent restarted (pid %d, was %d)", n.AgentPID(), pid)
		}
		body := get(t, n, "/patroni")
		tr.add("/patroni after rotation", body)
		if !strings.Contains(body, `"warnings"`) || !strings.Contains(body, "api certificate "+n.TLS.Cert+" expires on") {
			t.Errorf("/patroni lacks the expiry warning: %s", body)
		}
		m := get(t, n, "/metrics")
		if !strings.Contains(m, `pgvigil_certificate_expiry_seconds{file="`+n.TLS.Cert+`",name="`+n.Name+`",scope="demo",use="api"}`) ||
			!strings.Contains(m, `use="postgresql"`) || !strings.Contains(m, `use="etcd-client"`) {
			t.Errorf("metrics lack the certificate expiry series:\n%s", grepLines(m, "certificate"))
		}
		log, _ := os.ReadFile(n.LogPath)
		if !strings.Contains(string(log), "certificate reloaded") || !strings.Contains(string(log), "serial="+renewed) {
			t.Errorf("no reload line for serial %s in the node log", renewed)
		}
		waitFor(t, "all members streaming after the rotation", failoverTimeout, func() bool { return c.Streaming(ctx) })
	})

	t.Run("no password in any output", func(t *testing.T) {
		for _, path := range []string{"/patroni", "/cluster", "/config", "/history", "/metrics"} {
			tr.add(path, get(t, p, path))
		}
		for _, args := range [][]string{{"list", "-e"}, {"show-config"}, {"history"}, {"topology"}} {
			r := runCtl(t, "", append(args, "-c", p.ConfigPath)...)
			tr.add(strings.Join(args, " "), r.String())
			mustSucceed(t, r)
		}
		// edit-config checks parameters on the leader as the superuser (password from its
		// password_file) over verify-full: an unknown one is refused by the server's answer.
		r := runCtl(t, "", "edit-config", "-c", p.ConfigPath, "--pg", "work_mem_x=1", "--force")
		tr.add("edit-config", r.String())
		mustRefuse(t, r, "unknown PostgreSQL parameter work_mem_x")
		all := tr.b.String()
		for _, path := range []string{"/status", "/pools", "/clients", "/metrics"} {
			tr.add("proxy "+path, proxyGet(t, px, path))
		}
		b, err := os.ReadFile(px.LogPath)
		if err != nil || !strings.Contains(string(b), "routing read-write traffic to the new primary") {
			t.Fatalf("proxy log (%v) lacks its routing lines:\n%s", err, b)
		}
		all = tr.b.String() + string(b)
		for _, n := range c.Nodes {
			for _, f := range []string{n.LogPath, filepath.Join(n.Dir, "postgresql-"+n.Name+".log")} {
				b, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				all += string(b)
			}
		}
		if len(all) < 10000 {
			t.Fatalf("suspiciously little output collected (%d bytes)", len(all))
		}
		for _, s := range secrets {
			if i := strings.Index(all, s); i >= 0 {
				t.Errorf("password %q found in output: …%s…", s, all[max(0, i-200):min(len(all), i+100)])
			}
		}
	})
}

// proxyGet reads one of the proxy's HTTP endpoints.
func proxyGet(t *testing.T, px *localcluster.PGProxy, path string) string {
	t.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + px.HTTP + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func queryString(t *testing.T, n *localcluster.Node, q string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, n.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var s string
	if err := conn.QueryRow(ctx, q).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// peerSerial opens a new TLS connection to the node's REST API and returns the serial number
// of the certificate it presents.
func peerSerial(t *testing.T, n *localcluster.Node) string {
	t.Helper()
	tc, err := n.TLS.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", n.APIPort), tc)
	if err != nil {
		return "dial: " + err.Error()
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// pgSerial opens a new TLS connection to the node's PostgreSQL and returns the serial number of
// the certificate it presents ("" when the connection fails).
func pgSerial(t *testing.T, n *localcluster.Node) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, n.DSN())
	if err != nil {
		return ""
	}
	defer conn.Close(context.Background())
	tc, ok := conn.PgConn().Conn().(*tls.Conn)
	if !ok {
		t.Fatalf("connection to %s is not TLS", n.Name)
	}
	return tc.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

func fileSerial(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c.SerialNumber.String()
}

func get(t *testing.T, n *localcluster.Node, path string) string {
	t.Helper()
	resp, err := n.HTTPClient().Get(n.APIURL() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
