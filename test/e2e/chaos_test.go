package e2e

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pgvigil/pgvigil/internal/localcluster"
)

// The chaos loops repeat the failures of the end-to-end tests many times on one cluster. They
// take minutes each and run only with PGVIGIL_CHAOS set (`make chaos`), not in `make test`.

const (
	chaosSyncRounds   = 10
	chaosQuorumRounds = 5
	chaosAgentRounds  = 5
)

func chaosOnly(t *testing.T) {
	t.Helper()
	if os.Getenv("PGVIGIL_CHAOS") == "" {
		t.Skip("a long chaos loop: runs only with PGVIGIL_CHAOS=1 (make chaos)")
	}
}

// waitSyncStandby waits until the sync key names the current primary as leader and a standby.
func waitSyncStandby(t *testing.T, c *localcluster.Cluster) {
	t.Helper()
	ctx := context.Background()
	waitFor(t, "a synchronous standby of the primary in the sync key", 30*time.Second, func() bool {
		p, err := c.Primary(ctx)
		if err != nil {
			return false
		}
		v, _ := c.StoreValue(ctx, "sync")
		return strings.Contains(v, `"leader":"`+p.Name+`"`) && strings.Contains(v, `"sync_standby":"node`)
	})
}

// crashLoop SIGKILLs the primary (agent + postmaster) rounds times under a writer, checking each
// time that the new primary has every acknowledged id and that the killed member streams again.
func crashLoop(t *testing.T, mode string, rounds int) {
	c := syncCluster(t, mode, false)
	p, err := c.Primary(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Exec(context.Background(), "CREATE TABLE acked (id bigint)"); err != nil {
		t.Fatal(err)
	}
	for i := range rounds {
		start := time.Now()
		crashKeepsAcknowledged(t, c, int64(i+1)*100000)
		waitSyncStandby(t, c)
		t.Logf("round %d/%d (%s) done in %.1fs", i+1, rounds, mode, time.Since(start).Seconds())
	}
}

// TestChaosSyncCrashLoop: synchronous_mode on, 10 consecutive SIGKILLs of the primary.
func TestChaosSyncCrashLoop(t *testing.T) {
	chaosOnly(t)
	crashLoop(t, "on", chaosSyncRounds)
}

// TestChaosQuorumCrashLoop: synchronous_mode quorum (3 nodes, node count 1), 5 consecutive SIGKILLs.
func TestChaosQuorumCrashLoop(t *testing.T) {
	chaosOnly(t)
	crashLoop(t, "quorum", chaosQuorumRounds)
}

// TestChaosAgentKillLoop: 5 rounds of SIGKILL of the primary's agent alone (PostgreSQL left
// running), with synchronous_mode on and a writer on the primary. Once another member accepts
// writes, the orphaned PostgreSQL must not commit (the watchdog fenced it), the new primary has
// every acknowledged id, and the member rejoins as a streaming replica.
func TestChaosAgentKillLoop(t *testing.T) {
	chaosOnly(t)
	ctx := context.Background()
	c := syncCluster(t, "on", false)
	p, err := c.Primary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Exec(ctx, "CREATE TABLE acked (id bigint)"); err != nil {
		t.Fatal(err)
	}
	const fenced = "watchdog: heartbeat missed, stopped PostgreSQL"
	for i := range chaosAgentRounds {
		start := time.Now()
		p, err := c.Primary(ctx)
		if err != nil {
			t.Fatal(err)
		}
		before, _ := os.ReadFile(p.LogPath)
		pm := p.PostmasterPID()
		w := startWriter(t, p, int64(i+1)*100000)
		waitFor(t, "some writes", 30*time.Second, func() bool { w.mu.Lock(); defer w.mu.Unlock(); return len(w.acked) >= 30 })
		if err := p.KillAgent(); err != nil {
			t.Fatal(err)
		}
		np := newPrimary(t, c, p)
		if err := p.Exec(ctx, "INSERT INTO acked (id) VALUES (-2)"); err == nil {
			t.Fatalf("round %d: the old primary %s still commits while %s is primary: split brain", i+1, p.Name, np.Name)
		}
		acked := w.finish()
		if lost := missing(t, np, acked); len(lost) > 0 {
			t.Fatalf("round %d: %d of %d acknowledged writes lost on %s after the agent of %s was killed: %v",
				i+1, len(lost), len(acked), np.Name, p.Name, lost)
		}
		if pm != 0 && p.PostmasterPID() == pm {
			t.Fatalf("round %d: the old postmaster %d still runs", i+1, pm)
		}
		after, _ := os.ReadFile(p.LogPath)
		if strings.Count(string(after), fenced) <= strings.Count(string(before), fenced) {
			t.Fatalf("round %d: no fencing by the watchdog in %s's log", i+1, p.Name)
		}
		if err := c.StartNode(p); err != nil {
			t.Fatal(err)
		}
		waitFor(t, p.Name+" streaming again", bootTimeout, func() bool { return c.Streaming(ctx) })
		waitSyncStandby(t, c)
		t.Logf("round %d/%d: agent of %s killed, %s primary, %d acknowledged writes kept, %s rejoined (%.1fs)",
			i+1, chaosAgentRounds, p.Name, np.Name, len(acked), p.Name, time.Since(start).Seconds())
	}
}
