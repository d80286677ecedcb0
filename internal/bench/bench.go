// Package bench measures pgvigil on this machine and prints figures; it asserts nothing.
package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgvigil/pgvigil/internal/localcluster"
)

// Options for Failover.
type Options struct {
	Runs    int
	TTL     int
	Dir     string
	Binary  string
	Timeout time.Duration
	Out     io.Writer
	// Sync adds, after the asynchronous runs, Runs fresh clusters with synchronous_mode on at
	// ttl 10 and Runs at ttl 4 (Failover only).
	Sync bool
	// SkipAsync leaves out Failover's asynchronous runs (only the synchronous ones, with Sync).
	SkipAsync bool
}

type sample map[string][]time.Duration

// Failover runs Runs fresh 3-node clusters and times, on each: start → all streaming; SIGKILL
// of the primary (agent and postmaster) → first write accepted elsewhere; restart → streaming;
// SIGTERM of the primary's agent → first write elsewhere; restart → streaming. It ends with
// min/median/max per figure and the agents' resident memory. With Sync it then times a SIGKILL
// failover under a writer with synchronous_mode on (see failoverSync).
func Failover(ctx context.Context, o Options) error {
	if o.Dir == "" {
		d, err := os.MkdirTemp("", "pgvigil-bench-")
		if err != nil {
			return err
		}
		o.Dir = d
		defer os.RemoveAll(d)
	}
	if o.SkipAsync {
		if !o.Sync {
			return fmt.Errorf("nothing to run: both the asynchronous and the synchronous rows are left out")
		}
		fmt.Fprintln(o.Out, "pgvigil bench failover: synchronous_mode rows only")
		return failoverSync(ctx, o)
	}
	retry := min(3, (o.TTL-1)/2)
	fmt.Fprintf(o.Out, "pgvigil bench failover: %d runs, 3 nodes, ttl %d, loop_wait 1, retry_timeout %d\n", o.Runs, o.TTL, retry)
	s := sample{}
	var mem [][2]int
	for run := 1; run <= o.Runs; run++ {
		m, err := oneRun(ctx, o, filepath.Join(o.Dir, "run"+strconv.Itoa(run)), retry, s)
		if err != nil {
			return fmt.Errorf("run %d: %w", run, err)
		}
		mem = append(mem, m...)
	}
	fmt.Fprintf(o.Out, "\n%-40s %8s %8s %8s\n", "figure (seconds)", "min", "median", "max")
	for _, k := range []string{"start → all streaming", "SIGKILL primary → write elsewhere", "killed node restart → streaming",
		"SIGTERM primary agent → write elsewhere", "stopped node restart → streaming"} {
		d := s[k]
		slices.Sort(d)
		if len(d) == 0 {
			continue
		}
		fmt.Fprintf(o.Out, "%-40s %8.2f %8.2f %8.2f\n", k, d[0].Seconds(), d[len(d)/2].Seconds(), d[len(d)-1].Seconds())
	}
	for i, label := range []string{"agent RSS (MB)", "agent private memory (MB)"} {
		var v []int
		for _, m := range mem {
			v = append(v, m[i])
		}
		if len(v) > 0 {
			slices.Sort(v)
			fmt.Fprintf(o.Out, "%-40s %8.1f %8.1f %8.1f\n", label, float64(v[0])/1024, float64(v[len(v)/2])/1024, float64(v[len(v)-1])/1024)
		}
	}
	fmt.Fprintln(o.Out, "(RSS counts the binary's read-only pages, which the agents on one host share; private memory is the anonymous part.)")
	if o.Sync {
		return failoverSync(ctx, o)
	}
	return nil
}

func oneRun(ctx context.Context, o Options, dir string, retry int, s sample) ([][2]int, error) {
	t0 := time.Now()
	c, err := localcluster.Start(localcluster.Options{Dir: dir, Nodes: 3, Binary: o.Binary, TTL: o.TTL, LoopWait: 1, RetryTimeout: retry})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	step := func(name string, from time.Time, cond func() bool) error {
		if !localcluster.Wait(ctx, o.Timeout, 10*time.Millisecond, cond) {
			return fmt.Errorf("%s: not reached within %s", name, o.Timeout)
		}
		d := time.Since(from)
		s[name] = append(s[name], d)
		fmt.Fprintf(o.Out, "  %-40s %6.2fs\n", name, d.Seconds())
		return nil
	}
	if err := step("start → all streaming", t0, func() bool { return c.Streaming(ctx) }); err != nil {
		return nil, err
	}
	p, err := c.Primary(ctx)
	if err != nil {
		return nil, err
	}
	if err := p.Exec(ctx, "CREATE TABLE IF NOT EXISTS bench_writes (at timestamptz DEFAULT now())"); err != nil {
		return nil, err
	}
	rss := agentMemory(c)
	for _, kind := range []string{"SIGKILL", "SIGTERM"} {
		if !localcluster.Wait(ctx, o.Timeout, 50*time.Millisecond, func() bool { return c.Streaming(ctx) }) {
			return rss, fmt.Errorf("cluster not streaming before %s\n%s", kind, c.LogTails(30))
		}
		p, err := c.Primary(ctx)
		if err != nil {
			return rss, err
		}
		at := time.Now()
		if kind == "SIGKILL" {
			err = p.Crash()
		} else {
			err = p.Signal(syscall.SIGTERM, 0)
		}
		if err != nil {
			return rss, err
		}
		name := kind + " primary → write elsewhere"
		if kind == "SIGTERM" {
			name = "SIGTERM primary agent → write elsewhere"
		}
		if err := step(name, at, func() bool { return writeElsewhere(ctx, c, p) }); err != nil {
			return rss, err
		}
		if kind == "SIGTERM" {
			_ = localcluster.Wait(ctx, o.Timeout, 20*time.Millisecond, func() bool { return !p.Running() })
		}
		restart := time.Now()
		if err := c.StartNode(p); err != nil {
			return rss, err
		}
		name = "killed node restart → streaming"
		if kind == "SIGTERM" {
			name = "stopped node restart → streaming"
		}
		if err := step(name, restart, func() bool { return c.Streaming(ctx) }); err != nil {
			return rss, err
		}
	}
	return rss, nil
}

// writeElsewhere reports whether any node but old accepts a write.
func writeElsewhere(ctx context.Context, c *localcluster.Cluster, old *localcluster.Node) bool {
	return writableElsewhere(ctx, c, old) != nil
}

// writableElsewhere returns the first node but old that accepts a write, or nil.
func writableElsewhere(ctx context.Context, c *localcluster.Cluster, old *localcluster.Node) *localcluster.Node {
	for _, n := range c.Nodes {
		if n != old && n.Exec(ctx, "INSERT INTO bench_writes DEFAULT VALUES") == nil {
			return n
		}
	}
	return nil
}

// agentMemory reads each agent's resident set and its anonymous (private) part, in KiB.
func agentMemory(c *localcluster.Cluster) [][2]int {
	var out [][2]int
	for _, n := range c.Nodes {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", n.AgentPID()))
		if err != nil {
			continue
		}
		var m [2]int
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			kb, _ := strconv.Atoi(f[1])
			switch f[0] {
			case "Rss:":
				m[0] = kb
			case "Anonymous:":
				m[1] = kb
			}
		}
		out = append(out, m)
	}
	return out
}

// syncReference is Patroni 3.0.2's SIGKILL failover with synchronous_mode on, on this machine
// type, as the project's reference gives it; it is not measured by this run.
var syncReference = struct {
	ttl      int
	failover time.Duration
	lost     int
}{30, 25200 * time.Millisecond, 0}

// syncTargetSlack: the target for a synchronous-mode SIGKILL failover is ttl + this, with no
// acknowledged write lost, on every run.
const syncTargetSlack = 500 * time.Millisecond

// syncTTLs are the lease lengths the synchronous-mode rows run at.
var syncTTLs = []int{10, 4}

// syncRun is what one synchronous-mode SIGKILL run measured.
type syncRun struct {
	from, to  string
	elsewhere time.Duration // SIGKILL → first write accepted by another member
	acked     int           // writes the killed primary acknowledged
	lost      int           // of those, absent on the new primary
}

// failoverSync runs, for each ttl in syncTTLs, Runs fresh 3-node clusters with synchronous_mode
// on: a writer inserts increasing ids on the primary every 10–20 ms, the primary is SIGKILLed
// (agent and postmaster), and the run times the first write accepted elsewhere and counts the
// acknowledged ids missing on the new primary.
func failoverSync(ctx context.Context, o Options) error {
	fmt.Fprintf(o.Out, "\nsynchronous_mode on (PATCH /config): %d runs per ttl, 3 nodes, loop_wait 1; a writer inserts an increasing id\n", o.Runs)
	fmt.Fprintln(o.Out, "on the primary every 10–20 ms and records each acknowledged one; SIGKILL of the primary (agent + postmaster)")
	fmt.Fprintf(o.Out, "\n%-4s %-4s %-16s %10s %8s %6s\n", "ttl", "run", "failover", "elsewhere", "acked", "lost")
	results := map[int][]syncRun{}
	for _, ttl := range syncTTLs {
		retry := min(3, (ttl-1)/2)
		// The watchdog must fire after loop_wait + retry_timeout and before ttl; the default
		// margin (2 s) leaves no room at ttl 4.
		extra := ""
		if margin := 2; ttl-margin <= 1+retry {
			extra = fmt.Sprintf("watchdog:\n  safety_margin: %d\n", ttl-1-retry-1)
		}
		for run := 1; run <= o.Runs; run++ {
			dir := filepath.Join(o.Dir, fmt.Sprintf("sync-ttl%d-run%d", ttl, run))
			r, err := syncOneRun(ctx, o, dir, ttl, retry, extra)
			if err != nil {
				return fmt.Errorf("synchronous_mode on, ttl %d, run %d: %w", ttl, run, err)
			}
			results[ttl] = append(results[ttl], r)
			fmt.Fprintf(o.Out, "%-4d %-4d %-16s %9.2fs %8d %6d\n", ttl, run, r.from+" → "+r.to, r.elsewhere.Seconds(), r.acked, r.lost)
		}
	}

	fmt.Fprintf(o.Out, "\n%-44s %8s %8s %8s %9s  %s\n", "synchronous_mode on (seconds)", "min", "median", "max", "target", "met (every run)")
	allMet := true
	for _, ttl := range syncTTLs {
		rs := results[ttl]
		var d []time.Duration
		var lost []string
		met, lostTotal := true, 0
		target := time.Duration(ttl)*time.Second + syncTargetSlack
		for _, r := range rs {
			d = append(d, r.elsewhere)
			lost = append(lost, strconv.Itoa(r.lost))
			lostTotal += r.lost
			if r.elsewhere > target || r.lost != 0 {
				met = false
			}
		}
		slices.Sort(d)
		allMet = allMet && met
		fmt.Fprintf(o.Out, "%-44s %8.2f %8.2f %8.2f %9s  %s\n", fmt.Sprintf("SIGKILL primary → write elsewhere, ttl %d", ttl),
			d[0].Seconds(), d[len(d)/2].Seconds(), d[len(d)-1].Seconds(), fmt.Sprintf("≤ %.2f", target.Seconds()),
			yesNo(d[len(d)-1] <= target))
		fmt.Fprintf(o.Out, "%-44s %26s %9s  %s\n", fmt.Sprintf("acknowledged writes lost per run, ttl %d", ttl),
			strings.Join(lost, ", "), "0", yesNo(lostTotal == 0))
	}
	ref := syncReference
	fmt.Fprintf(o.Out, "\nreference, Patroni 3.0.2 on this machine type, synchronous_mode on, ttl %d (NOT measured by this run):\n", ref.ttl)
	fmt.Fprintf(o.Out, "  SIGKILL primary → write elsewhere %.1f s, acknowledged writes lost %d\n", ref.failover.Seconds(), ref.lost)
	fmt.Fprintf(o.Out, "target: ≤ ttl + %.1f s and 0 acknowledged writes lost, every run: met %s\n", syncTargetSlack.Seconds(), yesNo(allMet))
	return nil
}

// syncOneRun starts a fresh cluster, turns synchronous_mode on, and SIGKILLs the primary under
// a writer.
func syncOneRun(ctx context.Context, o Options, dir string, ttl, retry int, extra string) (syncRun, error) {
	var r syncRun
	c, err := localcluster.Start(localcluster.Options{Dir: dir, Nodes: 3, Binary: o.Binary, TTL: ttl, LoopWait: 1,
		RetryTimeout: retry, Extra: extra})
	if err != nil {
		return r, err
	}
	defer c.Close()
	if !localcluster.Wait(ctx, o.Timeout, 50*time.Millisecond, func() bool { return c.Streaming(ctx) }) {
		return r, fmt.Errorf("the cluster did not reach all-streaming within %s\n%s", o.Timeout, c.LogTails(30))
	}
	p, err := c.Primary(ctx)
	if err != nil {
		return r, err
	}
	for _, q := range []string{"CREATE TABLE bench_sync (id bigint PRIMARY KEY)", "CREATE TABLE IF NOT EXISTS bench_writes (at timestamptz DEFAULT now())"} {
		if err := p.Exec(ctx, q); err != nil {
			return r, err
		}
	}
	code, body, err := patchConfig(ctx, p.APIURL(), `{"synchronous_mode":"on"}`)
	if err != nil {
		return r, fmt.Errorf("PATCH /config: %w", err)
	}
	if code != http.StatusOK {
		return r, fmt.Errorf("PATCH /config answered %d %q", code, body)
	}
	if !localcluster.Wait(ctx, o.Timeout, 50*time.Millisecond, func() bool {
		v, _ := c.StoreValue(ctx, "sync")
		return strings.Contains(v, `"leader":"`+p.Name+`"`) && strings.Contains(v, `"sync_standby":"node`)
	}) {
		return r, fmt.Errorf("no synchronous standby in the sync key within %s", o.Timeout)
	}

	w := &syncWriter{node: p}
	wctx, stopWriter := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); w.run(wctx) }()
	stop := sync.OnceFunc(func() { stopWriter(); <-done })
	defer stop()
	if !localcluster.Wait(ctx, o.Timeout, 10*time.Millisecond, func() bool { return w.count() >= 50 }) {
		return r, fmt.Errorf("the writer had fewer than 50 acknowledged writes after %s", o.Timeout)
	}

	at := time.Now()
	if err := p.Crash(); err != nil {
		return r, err
	}
	var np *localcluster.Node
	if !localcluster.Wait(ctx, o.Timeout, 10*time.Millisecond, func() bool { np = writableElsewhere(ctx, c, p); return np != nil }) {
		return r, fmt.Errorf("no other member accepted a write within %s of the SIGKILL", o.Timeout)
	}
	r.elsewhere = time.Since(at)
	stop()

	acked := w.ids()
	have, err := tableIDs(ctx, np, "bench_sync")
	if err != nil {
		return r, fmt.Errorf("reading bench_sync on %s: %w", np.Name, err)
	}
	r.from, r.to, r.acked = p.Name, np.Name, len(acked)
	for _, id := range acked {
		if _, ok := have[id]; !ok {
			r.lost++
		}
	}
	return r, nil
}

// syncWriter inserts increasing ids on one node every 10–20 ms over one connection (a new one
// after an error, connect_timeout 1 s) and records those the server acknowledged.
type syncWriter struct {
	node  *localcluster.Node
	mu    sync.Mutex
	acked []int64
}

func (w *syncWriter) run(ctx context.Context) {
	dsn := fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=%s dbname=postgres sslmode=disable connect_timeout=1",
		w.node.PGPort, localcluster.Superuser, localcluster.SuperPass)
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			_ = conn.Close(context.Background())
		}
	}()
	for id := int64(1); ctx.Err() == nil; id++ {
		if conn == nil {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			conn, _ = pgx.Connect(cctx, dsn)
			cancel()
		}
		if conn != nil {
			ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := conn.Exec(ictx, "INSERT INTO bench_sync (id) VALUES ($1)", id)
			cancel()
			if err == nil {
				w.mu.Lock()
				w.acked = append(w.acked, id)
				w.mu.Unlock()
			} else {
				_ = conn.Close(context.Background())
				conn = nil
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(10*time.Millisecond + rand.N(10*time.Millisecond)): // #nosec G404 -- jitter between benchmark requests, not a secret
		}
	}
}

func (w *syncWriter) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

func (w *syncWriter) ids() []int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.acked)
}

// tableIDs reads every id of table on n.
func tableIDs(ctx context.Context, n *localcluster.Node, table string) (map[int64]struct{}, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, n.DSN())
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, "SELECT id FROM "+pgx.Identifier{table}.Sanitize())
	if err != nil {
		return nil, err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, err
	}
	have := make(map[int64]struct{}, len(ids))
	for _, id := range ids {
		have[id] = struct{}{}
	}
	return have, nil
}

// patchConfig sends PATCH /config with body to the REST API at base.
func patchConfig(ctx context.Context, base, body string) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, base+"/config", strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), err
}
