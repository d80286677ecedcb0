package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pgvigil/pgvigil/internal/localcluster"
)

// syncCluster starts 3 nodes and turns a synchronous mode on with PATCH /config, as an operator would.
func syncCluster(t *testing.T, mode string, strict bool) *localcluster.Cluster {
	t.Helper()
	c := startCluster(t, 3)
	ctx := context.Background()
	waitFor(t, "all members streaming", bootTimeout, func() bool { return c.Streaming(ctx) })
	p, err := c.Primary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	body := `{"synchronous_mode":"` + mode + `","synchronous_mode_strict":` + map[bool]string{true: "true", false: "false"}[strict] + `}`
	expect(t, p, "PATCH", "/config", body, 200, `"synchronous_mode"`)
	waitFor(t, "a synchronous standby in the sync key", 30*time.Second, func() bool {
		v, _ := c.StoreValue(ctx, "sync")
		return strings.Contains(v, `"leader":"`+p.Name+`"`) && strings.Contains(v, `"sync_standby":"node`)
	})
	return c
}

// crashKeepsAcknowledged writes continuously, SIGKILLs the primary (agent + postmaster) and
// checks that the new primary has every acknowledged id.
func crashKeepsAcknowledged(t *testing.T, c *localcluster.Cluster, from int64) {
	t.Helper()
	ctx := context.Background()
	p, err := c.Primary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w := startWriter(t, p, from)
	waitFor(t, "some writes", 30*time.Second, func() bool { w.mu.Lock(); defer w.mu.Unlock(); return len(w.acked) >= 30 })
	if err := p.Crash(); err != nil {
		t.Fatal(err)
	}
	acked := w.finish()
	np := newPrimary(t, c, p)
	if lost := missing(t, np, acked); len(lost) > 0 {
		t.Fatalf("%d of %d acknowledged writes lost on %s after the crash of %s: %v", len(lost), len(acked), np.Name, p.Name, lost)
	}
	t.Logf("crash of %s: %d acknowledged writes, all on the new primary %s", p.Name, len(acked), np.Name)
	if err := c.StartNode(p); err != nil {
		t.Fatal(err)
	}
	waitFor(t, p.Name+" streaming again", bootTimeout, func() bool { return c.Streaming(ctx) })
}

func TestSynchronousModeOnLosesNothing(t *testing.T) {
	c := syncCluster(t, "on", false)
	p, _ := c.Primary(context.Background())
	if err := p.Exec(context.Background(), "CREATE TABLE acked (id bigint)"); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		crashKeepsAcknowledged(t, c, int64(i+1)*100000)
		waitFor(t, "a synchronous standby again", 30*time.Second, func() bool {
			v, _ := c.StoreValue(context.Background(), "sync")
			return strings.Contains(v, `"sync_standby":"node`)
		})
	}
}

func TestQuorumModeLosesNothing(t *testing.T) {
	c := syncCluster(t, "quorum", false)
	ctx := context.Background()
	p, _ := c.Primary(ctx)
	if err := p.Exec(ctx, "CREATE TABLE acked (id bigint)"); err != nil {
		t.Fatal(err)
	}
	crashKeepsAcknowledged(t, c, 100000)
	// With one replica stopped first, the remaining replica alone must still carry every write.
	p, _ = c.Primary(ctx)
	var stopped *localcluster.Node
	for _, n := range c.Nodes {
		if n != p {
			stopped = n
			break
		}
	}
	if err := c.StopNode(stopped); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the sync key without "+stopped.Name, 30*time.Second, func() bool {
		v, _ := c.StoreValue(ctx, "sync")
		return !strings.Contains(v, stopped.Name) && strings.Contains(v, `"sync_standby":"node`)
	})
	w := startWriter(t, p, 300000)
	waitFor(t, "some writes", 30*time.Second, func() bool { w.mu.Lock(); defer w.mu.Unlock(); return len(w.acked) >= 30 })
	if err := p.Crash(); err != nil {
		t.Fatal(err)
	}
	acked := w.finish()
	np := newPrimary(t, c, p)
	if lost := missing(t, np, acked); len(lost) > 0 {
		t.Fatalf("%d acknowledged writes lost: %v", len(lost), lost)
	}
}

func TestStrictModeBlocksWithoutStandby(t *testing.T) {
	c := syncCluster(t, "on", true)
	ctx := context.Background()
	p, _ := c.Primary(ctx)
	if err := p.Exec(ctx, "CREATE TABLE acked (id bigint)"); err != nil {
		t.Fatal(err)
	}
	var replicas []*localcluster.Node
	for _, n := range c.Nodes {
		if n != p {
			replicas = append(replicas, n)
			if err := c.StopNode(n); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A commit must not be acknowledged while no standby can confirm it.
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		done <- p.ExecWait(ctx, "INSERT INTO acked (id) VALUES (7)")
	}()
	select {
	case err := <-done:
		t.Fatalf("a write was acknowledged with no standby in strict mode (err %v)", err)
	case <-time.After(3 * time.Second):
	}
	if err := c.StartNode(replicas[0]); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the blocked write failed instead of completing: %v", err)
		}
	case <-time.After(bootTimeout):
		t.Fatal("the blocked write did not complete after a standby returned")
	}
}
