package e2e

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/pgvigil/pgvigil/internal/localcluster"
)

// TestIsolatedPrimaryDemotes cuts the primary off the store and off the other members while
// clients keep writing to every member directly: the isolated primary must stop acknowledging
// writes before the majority side's new primary starts, and it rejoins as a replica once the
// network heals.
func TestIsolatedPrimaryDemotes(t *testing.T) {
	ctx := context.Background()
	c := startClusterOptions(t, localcluster.Options{Nodes: 3, Partitionable: true})
	waitFor(t, "all members streaming", bootTimeout, func() bool { return c.Streaming(ctx) })
	p, err := c.Primary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Exec(ctx, "CREATE TABLE freeze_writes (node text)"); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan []commit)
	go func() { done <- writeEverywhere(c, stop) }()
	waitFor(t, "writes on the primary", bootTimeout, func() bool {
		n, err := p.QueryInt(ctx, "SELECT count(*) FROM freeze_writes")
		return err == nil && n > 5
	})
	p.Isolate()
	np := writableOther(t, c, p, "INSERT INTO freeze_writes (node) VALUES ('probe')")
	if b, _ := os.ReadFile(p.LogPath); !strings.Contains(string(b), "demoting self because the leader lock could not be renewed") {
		t.Fatalf("the isolated primary %s did not demote itself", p.Name)
	}
	p.Reconnect()
	waitFor(t, p.Name+" back as a replica", bootTimeout, func() bool { return c.Streaming(ctx) })
	close(stop)
	commits := <-done
	noOverlap(t, commits, p.Name)
	if q, err := c.Primary(ctx); err != nil || q != np {
		t.Fatalf("primary after the partition healed = %v (%v), want %s", q, err, np.Name)
	}
}
