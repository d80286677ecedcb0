package e2e

import (
	"context"
	"crypto/tls"
	be "encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgvigil/pgvigil/internal/certs"
	"github.com/pgvigil/pgvigil/internal/localcluster"
)

// rawReply reads what the proxy answers on a raw connection until it closes it (bounded), and
// reports whether it closed (rather than the read timing out).
func rawReply(t *testing.T, conn net.Conn) (string, bool) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	b, err := io.ReadAll(conn)
	var ne net.Error
	closed := err == nil || errors.Is(err, syscall.ECONNRESET) || !(errors.As(err, &ne) && ne.Timeout())
	return string(b), closed
}

func dialProxy(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func startupPacket(code uint32, kv ...string) []byte {
	b := make([]byte, 8)
	be.BigEndian.PutUint32(b[4:], code)
	for _, s := range kv {
		b = append(b, s...)
		b = append(b, 0)
	}
	b = append(b, 0)
	be.BigEndian.PutUint32(b, uint32(len(b)))
	return b
}

// loggedIn opens a session through the proxy with pgconn and takes over its socket, so the
// test can then misbehave at the protocol level as an authenticated client.
func loggedIn(t *testing.T, px *localcluster.PGProxy) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pc, err := pgconn.Connect(ctx, px.DSN(false))
	if err != nil {
		t.Fatal(err)
	}
	h, err := pc.Hijack()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Conn.Close() })
	return h.Conn
}

// TestProxyBadClients: malformed, oversized, slow and unauthenticated clients get an error
// and are closed; a well-behaved client on the same proxy keeps working throughout. Also TLS
// to clients with reload on SIGHUP, GSSENC refusal and cancel requests.
func TestProxyBadClients(t *testing.T) {
	ctx := context.Background()
	c, _ := streamingCluster(t, 1)
	dir := workDir(t)
	f, err := certs.WriteSet(dir, "proxy", []string{"127.0.0.1", "localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	px := startProxy(t, c, "pool_mode: transaction\nstartup_timeout: 2s\nmax_message_size: 65536\ntls:\n  cert: "+f.Cert+"\n  key: "+f.Key+"\n")
	good, err := pgx.Connect(ctx, px.DSN(false))
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close(ctx)
	stillGood := func(after string) {
		t.Helper()
		var n int
		if err := good.QueryRow(ctx, "SELECT $1::int + 1", 41).Scan(&n); err != nil || n != 42 {
			t.Fatalf("the good client failed after %s: %d, %v", after, n, err)
		}
	}

	cases := []struct {
		name string
		send func(net.Conn)
		want string // in the reply; "" when only the close matters
	}{
		{"oversized startup packet", func(c net.Conn) {
			b := make([]byte, 8)
			be.BigEndian.PutUint32(b, 1<<20)
			be.BigEndian.PutUint32(b[4:], 196608)
			c.Write(b)
		}, "invalid startup packet length"},
		{"startup packet shorter than its header", func(c net.Conn) { c.Write([]byte{0, 0, 0, 3, 0, 0, 0, 0}) }, "invalid startup packet length"},
		{"protocol 2.0", func(c net.Conn) { c.Write(startupPacket(2<<16, "user", "postgres")) }, "unsupported frontend protocol"},
		{"startup without a user", func(c net.Conn) { c.Write(startupPacket(196608, "database", "postgres")) }, "no PostgreSQL user name"},
		{"startup with an unterminated parameter", func(c net.Conn) {
			b := startupPacket(196608, "user", "postgres")
			b = b[:len(b)-2]
			be.BigEndian.PutUint32(b, uint32(len(b)))
			c.Write(b)
		}, "invalid startup packet"},
		{"slow loris: half a startup packet", func(c net.Conn) { c.Write([]byte{0, 0}) }, ""},
		{"a password message instead of SCRAM", func(c net.Conn) {
			c.Write(startupPacket(196608, "user", "postgres"))
			c.Write([]byte{'p', 0, 0, 0, 9, 'a', 'b', 'c', 'd', 0})
		}, "expected a SASLInitialResponse"},
		{"a query before authentication", func(c net.Conn) {
			c.Write(startupPacket(196608, "user", "postgres"))
			c.Write([]byte{'Q', 0, 0, 0, 5, 0})
		}, "expected a password message"},
	}
	for _, tc := range cases {
		conn := dialProxy(t, px.RW)
		start := time.Now()
		tc.send(conn)
		reply, closed := rawReply(t, conn)
		if !closed {
			t.Fatalf("%s: the proxy kept the connection open for %s", tc.name, time.Since(start))
		}
		if tc.want != "" && !strings.Contains(reply, tc.want) {
			t.Fatalf("%s: reply %q lacks %q", tc.name, reply, tc.want)
		}
		stillGood(tc.name)
	}

	// Authenticated clients that break the protocol.
	for _, tc := range []struct {
		name string
		msg  []byte
		want string
	}{
		{"unknown message type", []byte{'Z', 0, 0, 0, 4}, "invalid frontend message type"},
		{"negative length", []byte{'Q', 0xff, 0xff, 0xff, 0xff}, "invalid message"},
		{"message above max_message_size", []byte{'Q', 0, 0x10, 0, 0}, "exceeds the size limit"},
	} {
		conn := loggedIn(t, px)
		conn.Write(tc.msg)
		reply, closed := rawReply(t, conn)
		if !closed || !strings.Contains(reply, tc.want) {
			t.Fatalf("%s: closed %v, reply %q, want %q", tc.name, closed, reply, tc.want)
		}
		stillGood(tc.name)
	}

	// Wrong password through libpq-compatible pgx, many times: refused every time.
	bad := strings.Replace(px.DSN(false), "password="+localcluster.SuperPass, "password=nope", 1)
	for i := 0; i < 5; i++ {
		if _, err := pgx.Connect(ctx, bad); err == nil || !strings.Contains(err.Error(), "28P01") {
			t.Fatalf("wrong password attempt %d: %v", i, err)
		}
	}
	stillGood("wrong passwords")

	// GSSAPI encryption is declined with 'N', and the session can go on in plain text.
	conn := dialProxy(t, px.RW)
	conn.Write(startupPacket(80877104))
	one := make([]byte, 1)
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(conn, one); err != nil || one[0] != 'N' {
		t.Fatalf("GSSENCRequest answered %q, %v; want N", one, err)
	}

	// TLS: sslmode=require works, and SIGHUP makes the proxy serve a new certificate.
	serial := func() string {
		t.Helper()
		conn := dialProxy(t, px.RW)
		conn.Write(startupPacket(80877103))
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(conn, one); err != nil || one[0] != 'S' {
			t.Fatalf("SSLRequest answered %q, %v", one, err)
		}
		tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true})
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		return tc.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	tlsConn, err := pgx.Connect(ctx, strings.Replace(px.DSN(false), "sslmode=disable", "sslmode=verify-full sslrootcert="+f.CA, 1))
	if err != nil {
		t.Fatalf("TLS through the proxy: %v", err)
	}
	var ssl bool
	if err := tlsConn.QueryRow(ctx, "SELECT true").Scan(&ssl); err != nil || !ssl {
		t.Fatal(err)
	}
	tlsConn.Close(ctx)
	s1 := serial()
	if _, err := certs.WriteSet(filepath.Dir(f.Cert), "proxy", []string{"127.0.0.1"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(px.PID(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reloaded certificate", 20*time.Second, func() bool { return serial() != s1 })

	// A cancel request reaches the server running the client's query.
	go func() {
		time.Sleep(time.Second)
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_ = good.PgConn().CancelRequest(cctx)
	}()
	start := time.Now()
	_, err = good.Exec(ctx, "SELECT pg_sleep(60)")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "57014" {
		t.Fatalf("cancelled query: %v after %s; want SQLSTATE 57014", err, time.Since(start))
	}
	stillGood("a cancel")

	// Operator control: PAUSE holds new transactions (no error) until RESUME.
	post := func(path string) {
		t.Helper()
		resp, err := http.Post("http://"+px.HTTP+path, "", nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("POST %s: %v %v", path, resp, err)
		}
		resp.Body.Close()
	}
	post("/pause")
	done := make(chan error, 1)
	go func() {
		var n int
		done <- good.QueryRow(ctx, "SELECT 7").Scan(&n)
	}()
	waitFor(t, "the paused query to show as waiting", 20*time.Second, func() bool {
		return strings.Contains(httpGet(t, "http://"+px.HTTP+"/clients"), `"state":"waiting"`)
	})
	select {
	case err := <-done:
		t.Fatalf("query ran while paused: %v", err)
	default:
	}
	post("/resume")
	if err := <-done; err != nil {
		t.Fatalf("held query after RESUME: %v", err)
	}

	// Observability: metrics count what happened above; pools and clients are listed. The
	// client that ran the query after RESUME turns idle once its server is released, just
	// after its answer went out: poll until the figures settle.
	wantMetrics := []string{
		`(?m)^pgvigil_proxy_errors_total\{kind="auth"\} ([5-9]|\d\d+)$`,
		`(?m)^pgvigil_proxy_errors_total\{kind="protocol"\} [1-9]`,
		`(?m)^pgvigil_proxy_transactions_total [1-9]`,
		`(?m)^pgvigil_proxy_queue_wait_seconds_count [1-9]`,
		`(?m)^pgvigil_proxy_store_reachable 1$`,
		`(?m)^pgvigil_proxy_paused 0$`,
		`(?m)^pgvigil_proxy_clients\{state="idle"\} [1-9]`,
		`(?m)^pgvigil_proxy_server_bytes_total [1-9]`,
	}
	var missing []string
	if !localcluster.Wait(ctx, 20*time.Second, 100*time.Millisecond, func() bool {
		m := httpGet(t, "http://"+px.HTTP+"/metrics")
		missing = missing[:0]
		for _, re := range wantMetrics {
			if !regexp.MustCompile(re).MatchString(m) {
				missing = append(missing, re)
			}
		}
		return len(missing) == 0
	}) {
		t.Errorf("after 20 s, metrics still lack %q", missing)
	}
	if p := httpGet(t, "http://"+px.HTTP+"/pools"); !strings.Contains(p, `"role":"read-write","database":"postgres","user":"postgres"`) {
		t.Errorf("/pools: %s", p)
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
