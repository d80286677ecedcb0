package e2e

import (
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestStoreLossFencesPrimary: when etcd goes away, the primary cannot renew its key and must stop
// accepting writes before the key could expire (safety rule 1), while replicas keep serving reads;
// when etcd returns the cluster heals without an operator.
func TestStoreLossFencesPrimary(t *testing.T) {
	ctx := context.Background()
	c, p := streamingCluster(t, 2)
	if err := p.Exec(ctx, "CREATE TABLE fence (id int)"); err != nil {
		t.Fatal(err)
	}
	if err := p.Exec(ctx, "INSERT INTO fence VALUES (0)"); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		waitFor(t, "the first write on "+n.Name, 30*time.Second, func() bool {
			k, err := n.QueryInt(ctx, "SELECT count(*) FROM fence WHERE id = 0")
			return err == nil && k == 1
		})
	}
	lost := time.Now()
	c.Etcd.Close()
	waitFor(t, p.Name+" to stop accepting writes", time.Minute, func() bool {
		return p.Exec(ctx, "INSERT INTO fence VALUES (1)") != nil
	})
	t.Logf("primary fenced %.1fs after the store went away", time.Since(lost).Seconds())
	// Safety, not speed: the agent must step down before the key it can no longer renew could
	// expire and be taken by another member (ttl 6 s here, fence budget loop_wait+retry_timeout = 3 s).
	b, _ := os.ReadFile(p.LogPath)
	m := regexp.MustCompile(`demoting self because the leader lock could not be renewed for ([0-9.]+s)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("no demotion verdict in the primary's log")
	}
	if d, err := time.ParseDuration(string(m[1])); err != nil || d >= 6*time.Second {
		t.Fatalf("demoted %s after the last renewal, not before the 6 s ttl could run out", m[1])
	}
	for _, n := range c.Nodes {
		if n == p {
			continue
		}
		if err := n.Exec(ctx, "INSERT INTO fence VALUES (2)"); err == nil {
			t.Fatalf("%s accepted a write without a store", n.Name)
		}
		if _, err := n.QueryInt(ctx, "SELECT count(*) FROM fence"); err != nil {
			t.Fatalf("replica %s stopped serving reads: %v", n.Name, err)
		}
	}
	// The outage lasts 3×ttl, then the store comes back: the cluster heals on its own, with one
	// primary and the write made before the outage.
	if rest := 18*time.Second - time.Since(lost); rest > 0 {
		time.Sleep(rest)
	}
	if err := c.Etcd.Restart(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "one primary and streaming replicas after the outage", bootTimeout, func() bool { return c.Streaming(ctx) })
	np, err := c.Primary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := np.QueryInt(ctx, "SELECT count(*) FROM fence WHERE id = 0"); err != nil || n != 1 {
		t.Fatalf("the write made before the outage is missing on %s: %d, %v", np.Name, n, err)
	}
	if err := np.Exec(ctx, "INSERT INTO fence VALUES (3)"); err != nil {
		t.Fatalf("no writes after the outage: %v", err)
	}
}

// TestStoreUnreachableAtStart: a node whose store is down keeps retrying with a log line per
// attempt instead of exiting.
func TestStoreUnreachableAtStart(t *testing.T) {
	c := startCluster(t, 1)
	c.Etcd.Close()
	n := c.Nodes[0]
	if err := c.StopNode(n); err != nil {
		t.Fatal(err)
	}
	if err := c.StartNode(n); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "repeated store warnings", 30*time.Second, func() bool {
		b, _ := os.ReadFile(n.LogPath)
		return strings.Count(string(b), "cannot read the store") >= 3
	})
	if !n.Running() {
		t.Fatal("agent exited while the store was unreachable")
	}
}

// TestFailsafeKeepsPrimaryThroughStoreOutage: with failsafe_mode on and every member up, a store
// outage of 3×ttl leaves the primary writable (each member confirms it over REST), and the
// cluster carries on when the store returns.
func TestFailsafeKeepsPrimaryThroughStoreOutage(t *testing.T) {
	ctx := context.Background()
	c, p := streamingCluster(t, 3)
	expect(t, p, "PATCH", "/config", `{"failsafe_mode":true}`, 200, `"failsafe_mode":true`)
	waitFor(t, "the failsafe key with every member", 30*time.Second, func() bool {
		v, _ := c.StoreValue(ctx, "failsafe")
		return strings.Count(v, "/patroni") == 3
	})
	for _, n := range c.Nodes { // each member applies the config in its next loop
		waitFor(t, n.Name+" in failsafe mode", 10*time.Second, func() bool {
			_, b := call(t, n, "GET", "/config", ``)
			return strings.Contains(b, `"failsafe_mode":true`)
		})
	}
	if err := p.Exec(ctx, "CREATE TABLE fs (id int)"); err != nil {
		t.Fatal(err)
	}
	lost := time.Now()
	c.Etcd.Close()
	for i := 0; time.Since(lost) < 18*time.Second; i++ {
		if err := p.Exec(ctx, "INSERT INTO fs VALUES ($1)", i); err != nil {
			t.Fatalf("the primary stopped accepting writes %.1fs into the outage despite failsafe mode: %v", time.Since(lost).Seconds(), err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, n := range c.Nodes {
		if n != p && n.Exec(ctx, "INSERT INTO fs VALUES (-1)") == nil {
			t.Fatalf("%s accepted a write during the outage", n.Name)
		}
	}
	if b, _ := os.ReadFile(p.LogPath); !strings.Contains(string(b), "failsafe mode: every member confirmed me as the leader") {
		t.Fatal("no failsafe verdict in the primary's log")
	}
	if _, m := call(t, p, "GET", "/metrics", ``); !regexp.MustCompile(`(?m)^patroni_failsafe_mode_is_active\{[^}]*\} 1$`).MatchString(m) {
		t.Fatal("patroni_failsafe_mode_is_active is not 1 on the primary during the outage")
	}
	if err := c.Etcd.Restart(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "one primary and streaming replicas after the outage", bootTimeout, func() bool { return c.Streaming(ctx) })
	if q, err := c.Primary(ctx); err != nil || q != p {
		t.Fatalf("primary after the outage = %v (%v), want %s", q, err, p.Name)
	}
	if err := p.Exec(ctx, "INSERT INTO fs VALUES (1000)"); err != nil {
		t.Fatal(err)
	}
}
