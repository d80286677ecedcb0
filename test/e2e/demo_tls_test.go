package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgvigil/pgvigil/internal/localcluster"
)

// lockedBuffer collects a process's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestDemoTLS runs `pgvigil demo --tls` and uses what it prints: the psql connection strings
// of a member and of the proxy's two listeners (real psql, sslmode=verify-full against the
// demo's CA; the proxy refuses psql without TLS) and the operator CLI line. Neither the
// narration nor anything else it prints shows a password.
func TestDemoTLS(t *testing.T) {
	dir := filepath.Join(workDir(t), "demo")
	var out lockedBuffer
	cmd := exec.Command(binary, "demo", "--tls", "--nodes", "3", "--dir", dir, "--for", "5m")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(2 * time.Minute):
			_ = cmd.Process.Kill()
			t.Error("demo did not stop within 2 minutes of SIGTERM")
		}
	}
	t.Cleanup(stop)
	waitFor(t, "the demo's members streaming", bootTimeout, func() bool { return strings.Contains(out.String(), "all 3 members streaming") })

	printed := out.String()
	m := regexp.MustCompile(`node1: PGPASSWORD="\$\(cat (\S+)\)" psql "([^"]+)"`).FindStringSubmatch(printed)
	if m == nil {
		t.Fatalf("no psql line for node1 in:\n%s", printed)
	}
	if !strings.Contains(m[2], "sslmode=verify-full") || !strings.Contains(m[2], "sslrootcert="+filepath.Join(dir, "tls", "ca.crt")) {
		t.Fatalf("connection string does not verify against the demo CA: %s", m[2])
	}
	pw, err := os.ReadFile(m[1])
	if err != nil {
		t.Fatal(err)
	}
	psql := func(conninfo string) (string, error) {
		c := exec.Command("/usr/lib/postgresql/15/bin/psql", conninfo, "-Atc", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
		c.Env = append(os.Environ(), "PGPASSWORD="+strings.TrimSpace(string(pw)), "PGCONNECT_TIMEOUT=5")
		b, err := c.CombinedOutput()
		return strings.TrimSpace(string(b)), err
	}
	if got, err := psql(m[2]); err != nil || got != "t" {
		t.Errorf("psql with the printed connection string: %q %v", got, err)
	}
	// Without the CA, verify-full cannot succeed.
	noCA := regexp.MustCompile(`sslrootcert=\S+`).ReplaceAllString(m[2], "sslrootcert=/nonexistent/root.crt")
	if got, err := psql(noCA); err == nil {
		t.Errorf("psql without the CA connected: %q", got)
	}

	// The proxy's lines: verify-full against the demo CA, the password read from its file.
	waitFor(t, "the demo's proxy lines", bootTimeout, func() bool { return strings.Contains(out.String(), "proxy pools, clients, metrics") })
	printed = out.String()
	if strings.Contains(printed, "proxy did not start") {
		t.Fatalf("the demo's proxy did not start:\n%s", printed)
	}
	for _, listener := range []struct{ name, query, want string }{
		{"read-write", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", "t"},
		{"read-only", "SELECT pg_is_in_recovery()", "t"},
	} {
		pm := regexp.MustCompile(listener.name + ` +PGPASSWORD="\$\(cat (\S+)\)" psql "([^"]+)"`).FindStringSubmatch(printed)
		if pm == nil {
			t.Fatalf("no %s proxy line in:\n%s", listener.name, printed)
		}
		if !strings.Contains(pm[2], "sslmode=verify-full") || !strings.Contains(pm[2], "sslrootcert="+filepath.Join(dir, "tls", "ca.crt")) {
			t.Fatalf("proxy connection string does not verify against the demo CA: %s", pm[2])
		}
		if b, err := os.ReadFile(pm[1]); err != nil || strings.TrimSpace(string(b)) != strings.TrimSpace(string(pw)) {
			t.Fatalf("the proxy's password file %s does not hold the superuser's password (%v)", pm[1], err)
		}
		// The read-only listener answers once the proxy has counted the replicas.
		var got string
		var err error
		ok := localcluster.Wait(context.Background(), failoverTimeout, 500*time.Millisecond, func() bool {
			c := exec.Command("/usr/lib/postgresql/15/bin/psql", pm[2], "-Atc", listener.query)
			c.Env = append(os.Environ(), "PGPASSWORD="+strings.TrimSpace(string(pw)), "PGCONNECT_TIMEOUT=5")
			var b []byte
			b, err = c.CombinedOutput()
			got = strings.TrimSpace(string(b))
			return err == nil && got == listener.want
		})
		if !ok {
			t.Errorf("psql through the proxy's %s listener with the printed string: %q %v", listener.name, got, err)
		}
		if listener.name == "read-write" {
			plain := regexp.MustCompile(`sslmode=verify-full sslrootcert=\S+`).ReplaceAllString(pm[2], "sslmode=disable")
			if got, err := psql(plain); err == nil || !strings.Contains(got, "client_tls_sslmode is require") {
				t.Errorf("psql without TLS through the proxy: %q %v", got, err)
			}
		}
	}

	cli := regexp.MustCompile(`pgvigil list -c (\S+)`).FindStringSubmatch(printed)
	if cli == nil {
		t.Fatalf("no CLI line in:\n%s", printed)
	}
	r := runCtl(t, "", "list", "-c", cli[1])
	mustSucceed(t, r, "| node1", "| node2", "| node3", "Leader")

	stop()
	all := out.String() + r.String()
	for _, s := range []string{localcluster.SuperPass, localcluster.ReplPass, localcluster.APIPass} {
		if strings.Contains(all, s) {
			t.Errorf("the demo printed password %q:\n%s", s, all)
		}
	}
	if !strings.Contains(all, "stopped; data kept in") {
		t.Errorf("the demo did not stop cleanly:\n%s", all)
	}
}
