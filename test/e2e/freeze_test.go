package e2e

import (
	"context"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgvigil/pgvigil/internal/localcluster"
)

// commit is one acknowledged write: where, and the server's commit time.
type commit struct {
	node string
	at   time.Time
}

// writeEverywhere tries a write on every node every 20 ms until stop closes, and records each
// acknowledged one with the server's own clock_timestamp() (one host, one clock).
func writeEverywhere(c *localcluster.Cluster, stop <-chan struct{}) []commit {
	var mu sync.Mutex
	var out []commit
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		wg.Add(1)
		go func(n *localcluster.Node) {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				us, err := n.QueryInt(ctx, "INSERT INTO freeze_writes (node) VALUES ($1) RETURNING (extract(epoch FROM clock_timestamp()) * 1000000)::bigint", n.Name)
				cancel()
				if err == nil {
					mu.Lock()
					out = append(out, commit{n.Name, time.UnixMicro(us)})
					mu.Unlock()
				}
			}
		}(n)
	}
	wg.Wait()
	sort.Slice(out, func(i, j int) bool { return out[i].at.Before(out[j].at) })
	return out
}

// TestFrozenAgentNoSplitBrain freezes the primary's agent (SIGSTOP) for 2×ttl while clients write
// to every member: acknowledged writes must never interleave between two members, and the old
// primary rejoins as a replica after SIGCONT.
func TestFrozenAgentNoSplitBrain(t *testing.T) {
	ctx := context.Background()
	c, p := streamingCluster(t, 3)
	if err := p.Exec(ctx, "CREATE TABLE freeze_writes (node text)"); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan []commit)
	go func() { done <- writeEverywhere(c, stop) }()
	time.Sleep(500 * time.Millisecond) // some writes on the first primary
	if err := p.Signal(syscall.SIGSTOP, 0); err != nil {
		t.Fatal(err)
	}
	np := writableOther(t, c, p, "INSERT INTO freeze_writes (node) VALUES ('probe')")
	time.Sleep(12 * time.Second) // 2×ttl frozen in total, writes continue on the new primary
	if err := p.Signal(syscall.SIGCONT, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, p.Name+" streaming as a replica", bootTimeout, func() bool { return c.Streaming(ctx) })
	close(stop)
	commits := <-done
	switched := noOverlap(t, commits, p.Name)
	if q, err := c.Primary(ctx); err != nil || q != np {
		t.Fatalf("primary after SIGCONT = %v (%v), want %s", q, err, np.Name)
	}
	t.Logf("%d writes acknowledged, %d on %s before the freeze", len(commits), switched, p.Name)
}

// noOverlap fails the test if old acknowledged a write after another member first did, and
// returns the index of that first write elsewhere.
func noOverlap(t *testing.T, commits []commit, old string) int {
	t.Helper()
	switched := -1
	for i, cm := range commits {
		if cm.node != old {
			switched = i
			break
		}
	}
	if switched < 0 {
		t.Fatal("no write acknowledged by the new primary")
	}
	for _, cm := range commits[switched:] {
		if cm.node == old {
			t.Fatalf("split brain: %s acknowledged a write at %s after %s had at %s",
				old, cm.at.Format(time.RFC3339Nano), commits[switched].node, commits[switched].at.Format(time.RFC3339Nano))
		}
	}
	return switched
}
