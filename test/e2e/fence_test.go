package e2e

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pgvigil/pgvigil/internal/watchdog"
)

// TestWatchdogFencesOrphanedPrimary: the primary's agent dies (SIGKILL) while PostgreSQL keeps
// running. The watchdog must stop that PostgreSQL before the lease can expire, so that when a
// replica is promoted no client can still commit on the old primary.
func TestWatchdogFencesOrphanedPrimary(t *testing.T) {
	ctx := context.Background()
	c, p := streamingCluster(t, 3)
	if err := p.Exec(ctx, "CREATE TABLE acked (id bigint)"); err != nil {
		t.Fatal(err)
	}
	pm := p.PostmasterPID()
	if err := p.KillAgent(); err != nil {
		t.Fatal(err)
	}
	np := newPrimary(t, c, p)
	// By the time another member is writable, the orphaned primary must not accept commits.
	if err := p.Exec(ctx, "INSERT INTO acked (id) VALUES (1)"); err == nil {
		t.Fatalf("the old primary %s still commits while %s is primary: split brain", p.Name, np.Name)
	}
	if p.PostmasterPID() == pm && pm != 0 {
		t.Fatalf("the old postmaster %d still runs", pm)
	}
	b, _ := os.ReadFile(p.LogPath)
	if !strings.Contains(string(b), "watchdog: heartbeat missed, stopped PostgreSQL") {
		t.Fatalf("no fencing by the watchdog in %s's log", p.Name)
	}
	// The member comes back with a new agent and rejoins as a replica.
	if err := c.StartNode(p); err != nil {
		t.Fatal(err)
	}
	waitFor(t, p.Name+" streaming again", bootTimeout, func() bool { return c.Streaming(ctx) })
	// The dead agent's watchdog was retired: only the new agent's guards the data directory.
	if pids := watchdog.Running(p.DataDir); len(pids) != 1 {
		t.Fatalf("%d watchdog processes guard %s, want 1: %v", len(pids), p.DataDir, pids)
	}
}

// TestAgentRestartKeepsPrimary: a primary's agent that crashes and is restarted at once (as
// systemd would) takes its leader key back; the dead agent's watchdog is retired instead of
// fencing the PostgreSQL the new agent adopted.
func TestAgentRestartKeepsPrimary(t *testing.T) {
	ctx := context.Background()
	c, p := streamingCluster(t, 2)
	pm := p.PostmasterPID()
	if err := p.KillAgent(); err != nil {
		t.Fatal(err)
	}
	if err := c.StartNode(p); err != nil {
		t.Fatal(err)
	}
	// Past the dead agent's watchdog deadline (ttl − safety_margin = 4 s) and the lease (6 s).
	time.Sleep(8 * time.Second)
	if got := p.PostmasterPID(); got != pm {
		t.Fatalf("postmaster %d replaced by %d: PostgreSQL was fenced although its agent came back", pm, got)
	}
	if q, err := c.Primary(ctx); err != nil || q != p {
		t.Fatalf("primary = %v (%v), want %s", q, err, p.Name)
	}
	if pids := watchdog.Running(p.DataDir); len(pids) != 1 {
		t.Fatalf("%d watchdog processes guard %s, want 1", len(pids), p.DataDir)
	}
}
