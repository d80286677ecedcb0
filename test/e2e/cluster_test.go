package e2e

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgvigil/pgvigil/internal/localcluster"
)

const (
	bootTimeout     = 2 * time.Minute
	failoverTimeout = time.Minute
)

func startCluster(t *testing.T, nodes int) *localcluster.Cluster {
	t.Helper()
	return startClusterWith(t, nodes, "")
}

// startClusterWith appends extra YAML to every node's configuration.
func startClusterWith(t *testing.T, nodes int, extra string) *localcluster.Cluster {
	t.Helper()
	return startClusterOptions(t, localcluster.Options{Nodes: nodes, Extra: extra})
}

// startClusterOptions starts a cluster with the suite's timings (ttl 6, loop_wait 1,
// retry_timeout 2) and callbacks, and dumps the nodes' logs when the test fails.
func startClusterOptions(t *testing.T, o localcluster.Options) *localcluster.Cluster {
	t.Helper()
	o.Dir, o.Binary, o.TTL, o.LoopWait, o.RetryTimeout, o.Callbacks = workDir(t), binary, 6, 1, 2, true
	c, err := localcluster.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(c.LogTails(40))
		}
		c.Close()
	})
	return c
}

// streamingCluster starts nodes members, waits until they all stream, and returns the primary.
func streamingCluster(t *testing.T, nodes int) (*localcluster.Cluster, *localcluster.Node) {
	t.Helper()
	c := startCluster(t, nodes)
	ctx := context.Background()
	waitFor(t, "all members streaming", bootTimeout, func() bool { return c.Streaming(ctx) })
	p, err := c.Primary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return c, p
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	if !localcluster.Wait(context.Background(), timeout, 100*time.Millisecond, cond) {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}

// writer inserts increasing ids into the primary and remembers which ones were acknowledged.
type writer struct {
	mu    sync.Mutex
	acked []int64
	stop  chan struct{}
	done  chan struct{}
}

func startWriter(t *testing.T, n *localcluster.Node, from int64) *writer {
	t.Helper()
	w := &writer{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for id := from; ; id++ {
			select {
			case <-w.stop:
				return
			default:
			}
			if err := n.Exec(context.Background(), "INSERT INTO acked (id) VALUES ($1)", id); err != nil {
				return // the primary went away: everything after this was never acknowledged
			}
			w.mu.Lock()
			w.acked = append(w.acked, id)
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *writer) finish() []int64 {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]int64(nil), w.acked...)
}

// missing returns the acknowledged ids absent on n.
func missing(t *testing.T, n *localcluster.Node, ids []int64) []int64 {
	t.Helper()
	var out []int64
	for _, id := range ids {
		c, err := n.QueryInt(context.Background(), "SELECT count(*) FROM acked WHERE id = $1", id)
		if err != nil {
			t.Fatalf("reading id %d on %s: %v", id, n.Name, err)
		}
		if c != 1 {
			out = append(out, id)
		}
	}
	return out
}

func newPrimary(t *testing.T, c *localcluster.Cluster, old *localcluster.Node) *localcluster.Node {
	t.Helper()
	return writableOther(t, c, old, "INSERT INTO acked (id) VALUES (-1)")
}

// writableOther waits until a member other than old accepts the write sql, and returns it.
func writableOther(t *testing.T, c *localcluster.Cluster, old *localcluster.Node, sql string) *localcluster.Node {
	t.Helper()
	var p *localcluster.Node
	waitFor(t, "another member to accept writes", failoverTimeout, func() bool {
		for _, n := range c.Nodes {
			if n != old && n.Exec(context.Background(), sql) == nil {
				p = n
				return true
			}
		}
		return false
	})
	return p
}

func replayed(n *localcluster.Node, id int64) bool {
	c, err := n.QueryInt(context.Background(), "SELECT count(*) FROM acked WHERE id = $1", id)
	return err == nil && c == 1
}

// TestClusterLifecycle walks one cluster through bootstrap, replication, a crash of the primary,
// the rejoin of the crashed member by pg_rewind, and a graceful stop of the next primary.
func TestClusterLifecycle(t *testing.T) {
	ctx := context.Background()
	c := startCluster(t, 3)
	waitFor(t, "all members streaming", bootTimeout, func() bool { return c.Streaming(ctx) })

	p, err := c.Primary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Exec(ctx, "CREATE TABLE acked (id bigint, at timestamptz DEFAULT clock_timestamp())"); err != nil {
		t.Fatal(err)
	}
	if err := p.Exec(ctx, "INSERT INTO acked (id) VALUES (0)"); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		if n != p {
			waitFor(t, "row 0 on "+n.Name, 30*time.Second, func() bool { return replayed(n, 0) })
		}
	}
	// The REST health checks HAProxy relies on: 200 only where the role matches.
	for _, n := range c.Nodes {
		want := map[string]int{"/primary": 503, "/replica": 200, "/health": 200}
		if n == p {
			want = map[string]int{"/primary": 200, "/replica": 503, "/health": 200}
		}
		for path, code := range want {
			if got, err := n.Check(ctx, path); err != nil || got != code {
				t.Errorf("%s GET %s = %d (%v), want %d", n.Name, path, got, err, code)
			}
		}
	}

	t.Run("PostgreSQL crash under a live agent restarts in place", func(t *testing.T) {
		pm := p.PostmasterPID()
		if pm == 0 {
			t.Fatal("no postmaster pid")
		}
		if err := syscall.Kill(pm, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitFor(t, p.Name+" to accept writes again", failoverTimeout, func() bool {
			return p.PostmasterPID() != 0 && p.PostmasterPID() != pm && p.Exec(ctx, "INSERT INTO acked (id) VALUES (-2)") == nil
		})
		if q, err := c.Primary(ctx); err != nil || q != p {
			t.Fatalf("primary after restart in place = %v (%v), want %s", q, err, p.Name)
		}
		if b, _ := os.ReadFile(p.LogPath); !strings.Contains(string(b), "starting primary after failure") {
			t.Fatal("no restart verdict in the log")
		}
		waitFor(t, "replicas streaming again", bootTimeout, func() bool { return c.Streaming(ctx) })
	})
	if t.Failed() {
		return
	}

	t.Run("crash of the primary fails over without losing replicated writes", func(t *testing.T) {
		w := startWriter(t, p, 1)
		waitFor(t, "some writes", 30*time.Second, func() bool { w.mu.Lock(); defer w.mu.Unlock(); return len(w.acked) >= 50 })
		acked := w.finish()
		last := acked[len(acked)-1]
		for _, n := range c.Nodes {
			if n != p {
				waitFor(t, "last write on "+n.Name, 30*time.Second, func() bool { return replayed(n, last) })
			}
		}
		if err := p.Crash(); err != nil {
			t.Fatal(err)
		}
		np := newPrimary(t, c, p)
		if lost := missing(t, np, acked); len(lost) > 0 {
			t.Fatalf("%d acknowledged writes lost on %s after failover: %v", len(lost), np.Name, lost)
		}
		if err := p.Exec(ctx, "SELECT 1"); err == nil {
			t.Fatalf("crashed %s still accepts connections", p.Name)
		}
		// The store records the promotion, and the new leader keeps a slot for every other member.
		var hist []json.RawMessage
		waitFor(t, "a history entry naming "+np.Name, 10*time.Second, func() bool {
			v, _ := c.StoreValue(ctx, "history")
			return json.Unmarshal([]byte(v), &hist) == nil && len(hist) == 1 && strings.Contains(string(hist[0]), `"`+np.Name+`"`)
		})
		if v, _ := c.StoreValue(ctx, "leader"); v != np.Name {
			t.Fatalf("leader key = %q, want %q", v, np.Name)
		}
		// The crashed member's key expired with its lease, so it has no slot until it rejoins.
		slots := func(names ...string) func() bool {
			return func() bool {
				n, err := np.QueryInt(ctx, "SELECT count(*) FROM pg_replication_slots WHERE slot_type = 'physical'")
				if err != nil || n != int64(len(names)) {
					return false
				}
				for _, name := range names {
					if k, err := np.QueryInt(ctx, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", name); err != nil || k != 1 {
						return false
					}
				}
				return true
			}
		}
		var survivors []string
		for _, n := range c.Nodes {
			if n != np && n != p {
				survivors = append(survivors, n.Name)
			}
		}
		waitFor(t, "slots for the surviving replicas on "+np.Name, 10*time.Second, slots(survivors...))
		waitFor(t, "on_role_change callback on "+np.Name, 10*time.Second, func() bool {
			b, _ := os.ReadFile(np.CallbackLog)
			return strings.Contains(string(b), "on_role_change primary "+localcluster.DefaultScope)
		})

		// The crashed member comes back: it must rewind and stream from the new primary.
		if err := c.StartNode(p); err != nil {
			t.Fatal(err)
		}
		waitFor(t, p.Name+" streaming again", bootTimeout, func() bool { return c.Streaming(ctx) })
		if q, err := c.Primary(ctx); err != nil || q != np {
			t.Fatalf("primary after rejoin = %v (%v), want %s", q, err, np.Name)
		}
		waitFor(t, "a slot for the rejoined member", 10*time.Second, slots(append(survivors, p.Name)...))
		if err := np.Exec(ctx, "INSERT INTO acked (id) VALUES (100000)"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "a new write on the rejoined "+p.Name, 30*time.Second, func() bool { return replayed(p, 100000) })
		stNew, _ := np.Status(ctx)
		stOld, _ := p.Status(ctx)
		if stNew == nil || stOld == nil || stOld.Timeline != stNew.Timeline {
			t.Fatalf("rejoined member timeline %+v, primary %+v", stOld, stNew)
		}
		if b, _ := os.ReadFile(p.LogPath); !strings.Contains(string(b), "rewinding from leader") {
			t.Fatalf("%s rejoined without pg_rewind (no rewind verdict in its log)", p.Name)
		}
		p = np
	})
	if t.Failed() {
		return
	}

	t.Run("graceful stop of the primary hands over with zero acknowledged writes lost", func(t *testing.T) {
		w := startWriter(t, p, 200000)
		waitFor(t, "some writes", 30*time.Second, func() bool { w.mu.Lock(); defer w.mu.Unlock(); return len(w.acked) >= 50 })
		if err := p.Signal(syscall.SIGTERM, 0); err != nil {
			t.Fatal(err)
		}
		np := newPrimary(t, c, p)
		acked := w.finish()
		if len(acked) == 0 {
			t.Fatal("no acknowledged writes")
		}
		if lost := missing(t, np, acked); len(lost) > 0 {
			t.Fatalf("%d of %d acknowledged writes lost after a graceful stop: %v", len(lost), len(acked), lost)
		}
		waitFor(t, p.Name+" agent to exit", time.Minute, func() bool { return !p.Running() })
		if p.PostmasterPID() != 0 {
			t.Fatalf("%s's PostgreSQL still runs after its agent stopped", p.Name)
		}
	})
}
