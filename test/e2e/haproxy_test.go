package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgvigil/pgvigil/internal/localcluster"
)

// haproxyPorts are the two client ports of the rendered examples/haproxy.cfg.
type haproxyPorts struct{ RW, RO int }

// startHAProxy renders examples/haproxy.cfg for a 3-member cluster and runs HAProxy in the
// foreground as a child process, stopped by its PID when the test ends.
func startHAProxy(t *testing.T, c *localcluster.Cluster) haproxyPorts {
	t.Helper()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Fatal("haproxy is not on PATH: run scripts/deps.sh (make deps), which installs it with apt-get")
	}
	if len(c.Nodes) != 3 {
		t.Fatalf("examples/haproxy.cfg lists 3 members, the cluster has %d", len(c.Nodes))
	}
	var ports haproxyPorts
	if ports.RW, err = localcluster.FreePort(); err != nil {
		t.Fatal(err)
	}
	if ports.RO, err = localcluster.FreePort(); err != nil {
		t.Fatal(err)
	}
	data := map[string]any{"Bind": "127.0.0.1", "PrimaryPort": ports.RW, "ReplicaPort": ports.RO}
	for i, n := range c.Nodes {
		data[fmt.Sprintf("Host%d", i+1)] = "127.0.0.1"
		data[fmt.Sprintf("PGPort%d", i+1)] = n.PGPort
		data[fmt.Sprintf("APIPort%d", i+1)] = n.APIPort
	}
	tmpl, err := template.New("haproxy.cfg").Option("missingkey=error").ParseFiles("../../examples/haproxy.cfg")
	if err != nil {
		t.Fatal(err)
	}
	var cfg bytes.Buffer
	if err := tmpl.Execute(&cfg, data); err != nil {
		t.Fatal(err)
	}
	dir := workDir(t)
	cfgPath, logPath := filepath.Join(dir, "haproxy.cfg"), filepath.Join(dir, "haproxy.log")
	if err := os.WriteFile(cfgPath, cfg.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-c", "-f", cfgPath).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c rejects the rendered examples/haproxy.cfg: %v\n%s", err, out)
	}
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-f", cfgPath, "-db")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("--- haproxy log (%s)\n%s", logPath, b)
		}
	})
	return ports
}

func proxyDSN(port int) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=%s dbname=postgres sslmode=disable connect_timeout=2",
		port, localcluster.Superuser, localcluster.SuperPass)
}

// landing is where one connection through HAProxy ended up.
type landing struct {
	port       int
	inRecovery bool
}

// viaProxy opens a new connection through HAProxy, runs sql (if any) and reports the server
// the connection reached.
func viaProxy(port int, sql string, args ...any) (landing, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, proxyDSN(port))
	if err != nil {
		return landing{}, err
	}
	defer conn.Close(context.Background())
	if sql != "" {
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			return landing{}, err
		}
	}
	var l landing
	err = conn.QueryRow(ctx, "SELECT inet_server_port(), pg_is_in_recovery()").Scan(&l.port, &l.inRecovery)
	return l, err
}

// checkReadOnly makes at least want successful connections through the read-only port, and
// goes on until each of replicas has been reached (HAProxy marks a member up only at its next
// check). It fails the test if any connection reaches a server that is not in recovery or not
// one of replicas. Refused connections (no replica marked up at that moment) are retried.
func checkReadOnly(t *testing.T, port int, replicas []*localcluster.Node, want int) {
	t.Helper()
	allowed := map[int]string{}
	for _, n := range replicas {
		allowed[n.PGPort] = n.Name
	}
	seen := map[string]int{}
	var lastErr error
	deadline := time.Now().Add(30 * time.Second)
	for ok := 0; ok < want || len(seen) < len(replicas); {
		if time.Now().After(deadline) {
			t.Fatalf("within 30s, %d connections through the read-only port succeeded (want %d), reaching %v of %d replicas (last error: %v)",
				ok, want, seen, len(replicas), lastErr)
		}
		l, err := viaProxy(port, "")
		if err != nil {
			lastErr = err
			time.Sleep(100 * time.Millisecond)
			continue
		}
		ok++
		name, isReplica := allowed[l.port]
		if !l.inRecovery || !isReplica {
			t.Fatalf("a read-only connection reached port %d (in recovery: %v), want one of the replicas %v", l.port, l.inRecovery, allowed)
		}
		seen[name]++
		if ok >= want && len(seen) < len(replicas) {
			time.Sleep(50 * time.Millisecond)
		}
	}
	t.Logf("read-only connections per replica: %v", seen)
}

// TestHAProxy runs real HAProxy with examples/haproxy.cfg in front of a 3-member cluster:
// writes go to the primary, reads to replicas only, and after the primary crashes the same
// read-write port leads to the new primary.
func TestHAProxy(t *testing.T) {
	ctx := context.Background()
	c := startCluster(t, 3)
	ports := startHAProxy(t, c)
	waitFor(t, "all members streaming", bootTimeout, func() bool { return c.Streaming(ctx) })
	p, err := c.Primary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Exec(ctx, "CREATE TABLE via_haproxy (id int, at timestamptz DEFAULT clock_timestamp())"); err != nil {
		t.Fatal(err)
	}

	var l landing
	waitFor(t, "a write through the read-write port", 30*time.Second, func() bool {
		l, err = viaProxy(ports.RW, "INSERT INTO via_haproxy (id) VALUES (1)")
		return err == nil
	})
	if l.port != p.PGPort || l.inRecovery {
		t.Fatalf("the read-write port reached port %d (in recovery: %v), want the primary %s on %d", l.port, l.inRecovery, p.Name, p.PGPort)
	}
	var replicas []*localcluster.Node
	for _, n := range c.Nodes {
		if n != p {
			replicas = append(replicas, n)
		}
	}
	checkReadOnly(t, ports.RO, replicas, 20)

	if err := p.Crash(); err != nil {
		t.Fatal(err)
	}
	crashed := time.Now()
	var errs []string
	waitFor(t, "a write through the same read-write port after the crash", failoverTimeout, func() bool {
		l, err = viaProxy(ports.RW, "INSERT INTO via_haproxy (id) VALUES (2)")
		if err != nil && (len(errs) == 0 || errs[len(errs)-1] != err.Error()) {
			errs = append(errs, err.Error())
		}
		return err == nil
	})
	t.Logf("first write through HAProxy %.1fs after the crash (errors on the way: %s)", time.Since(crashed).Seconds(),
		strings.Join(errs, "; "))
	np, err := c.Primary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if np == p {
		t.Fatalf("%s is still the primary after its crash", p.Name)
	}
	if l.port != np.PGPort || l.inRecovery {
		t.Fatalf("the write after failover reached port %d (in recovery: %v), want the new primary %s on %d",
			l.port, l.inRecovery, np.Name, np.PGPort)
	}
	// HAProxy marks the promoted member down in the replicas section after fall × inter
	// (2 × 500 ms) of 503s on /replica; give it that, then no read may reach it.
	time.Sleep(1500 * time.Millisecond)
	var left []*localcluster.Node
	for _, n := range c.Nodes {
		if n != p && n != np {
			left = append(left, n)
		}
	}
	checkReadOnly(t, ports.RO, left, 20)
}
