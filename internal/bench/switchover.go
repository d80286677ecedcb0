package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgvigil/pgvigil/internal/localcluster"
)

// switchoverReference is Patroni 3.0.2's switchover on this machine type, as the project's
// reference gives it; it is not measured by this run.
var switchoverReference = struct {
	command, unavailable, oldStreaming time.Duration
	lost                               int
}{2460 * time.Millisecond, 1310 * time.Millisecond, 13100 * time.Millisecond, 0}

// The project's targets for a switchover.
const (
	targetCommand      = time.Second
	targetUnavailable  = 300 * time.Millisecond
	targetOldStreaming = 2 * time.Second
)

// writeAttempt is one insert of the switchover writer.
type writeAttempt struct {
	id         int64
	start, end time.Time
	ok         bool
}

// swWriter inserts increasing ids every 20 ms, each attempt on new connections, first to the
// node it believes is the primary and on failure to every other node in turn (as a client with a
// multi-host connection string and target_session_attrs=read-write would).
type swWriter struct {
	nodes []*localcluster.Node
	mu    sync.Mutex
	log   []writeAttempt
}

func (w *swWriter) run(ctx context.Context, believed int) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for id := int64(1); ; id++ {
		a := writeAttempt{id: id, start: time.Now()}
		for k := range w.nodes {
			i := (believed + k) % len(w.nodes)
			if writeOne(ctx, w.nodes[i], id) == nil {
				a.ok, believed = true, i
				break
			}
			if ctx.Err() != nil {
				return
			}
		}
		a.end = time.Now()
		w.mu.Lock()
		w.log = append(w.log, a)
		w.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// attempts is a copy of the log so far.
func (w *swWriter) attempts() []writeAttempt {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.log)
}

// writeOne opens a new connection to n (connect_timeout 1 s) and inserts id.
func writeOne(ctx context.Context, n *localcluster.Node, id int64) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	dsn := fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=%s dbname=postgres sslmode=disable connect_timeout=1",
		n.PGPort, localcluster.Superuser, localcluster.SuperPass)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, "INSERT INTO bench_sw (id) VALUES ($1)", id)
	return err
}

// swRun is what one switchover measured.
type swRun struct {
	from, to     string
	command      time.Duration // POST /switchover wall time
	oldStreaming time.Duration // command start → old primary is a streaming replica
	unavailable  time.Duration // first failed write → first acknowledged write after it
	failed       int           // failed write attempts in the run's window
	longestGap   time.Duration // longest span without an acknowledged write in the window
}

// Switchover starts one fresh 3-node cluster, keeps a writer inserting every 20 ms, and Runs
// times switches the primary over to a replica (rotating) with POST /switchover. It times the
// command, the writer's unavailability and the old primary's return as a streaming replica,
// then checks that every acknowledged insert is on the final primary.
func Switchover(ctx context.Context, o Options) error {
	if o.Dir == "" {
		d, err := os.MkdirTemp("", "pgvigil-bench-sw-")
		if err != nil {
			return err
		}
		o.Dir = d
		defer os.RemoveAll(d)
	}
	retry := min(3, (o.TTL-1)/2)
	fmt.Fprintf(o.Out, "pgvigil bench switchover: %d switchovers on one 3-node cluster, ttl %d, loop_wait 1, retry_timeout %d\n", o.Runs, o.TTL, retry)
	fmt.Fprintln(o.Out, "writer: one insert every 20 ms, each on a new connection (connect_timeout 1 s), to the node it believes")
	fmt.Fprintln(o.Out, "is the primary, then to every other node in turn until one accepts it")
	c, err := localcluster.Start(localcluster.Options{Dir: filepath.Join(o.Dir, "cluster"), Nodes: 3, Binary: o.Binary,
		TTL: o.TTL, LoopWait: 1, RetryTimeout: retry})
	if err != nil {
		return err
	}
	defer c.Close()
	streaming := func() bool { return c.Streaming(ctx) }
	if !localcluster.Wait(ctx, o.Timeout, 50*time.Millisecond, streaming) {
		return fmt.Errorf("the cluster did not reach all-streaming within %s", o.Timeout)
	}
	p, err := c.Primary(ctx)
	if err != nil {
		return err
	}
	if err := p.Exec(ctx, "CREATE TABLE bench_sw (id bigint PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())"); err != nil {
		return err
	}

	w := &swWriter{nodes: c.Nodes}
	wctx, stopWriter := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); w.run(wctx, slices.Index(c.Nodes, p)) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			stopWriter()
			wg.Wait()
		}
	}
	defer stop()

	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 2*time.Minute + 2*time.Duration(o.TTL)*time.Second}

	fmt.Fprintf(o.Out, "\n%-4s %-16s %9s %12s %8s %12s %14s\n", "run", "switchover", "command", "unavailable", "failed", "longest gap", "old streaming")
	var runs []swRun
	for run := 1; run <= o.Runs; run++ {
		// All members stream, and the store says so too (a member's key can lag its /patroni).
		var old *localcluster.Node
		if !localcluster.Wait(ctx, o.Timeout, 50*time.Millisecond, func() bool {
			var err error
			if !c.Streaming(ctx) {
				return false
			}
			if old, err = c.Primary(ctx); err != nil {
				return false
			}
			return membersReady(ctx, client, old.APIURL(), len(c.Nodes))
		}) {
			return fmt.Errorf("run %d: the cluster did not reach all-streaming within %s", run, o.Timeout)
		}
		cand := c.Nodes[(slices.Index(c.Nodes, old)+1)%len(c.Nodes)]
		time.Sleep(500 * time.Millisecond) // a few acknowledged writes before the command
		r := swRun{from: old.Name, to: cand.Name}
		t0 := time.Now()
		code, body, err := postSwitchover(ctx, client, old.APIURL(), old.Name, cand.Name)
		r.command = time.Since(t0)
		if err != nil {
			return fmt.Errorf("run %d: POST /switchover: %w", run, err)
		}
		if code != http.StatusOK || !strings.HasPrefix(body, "Successfully switched over to") {
			return fmt.Errorf("run %d: POST /switchover answered %d %q", run, code, body)
		}
		if !localcluster.Wait(ctx, o.Timeout, 10*time.Millisecond, func() bool {
			st, err := old.Status(ctx)
			return err == nil && st.State == "running" && st.Role == "replica" && st.ReplicationState == "streaming"
		}) {
			return fmt.Errorf("run %d: %s did not stream again within %s", run, old.Name, o.Timeout)
		}
		r.oldStreaming = time.Since(t0)
		time.Sleep(500 * time.Millisecond) // let the writer settle on the new primary
		r.unavailable, r.failed, r.longestGap = writeFigures(w.attempts(), t0, time.Now())
		runs = append(runs, r)
		fmt.Fprintf(o.Out, "%-4d %-16s %8.2fs %11.3fs %8d %11.3fs %13.2fs\n", run, r.from+" → "+r.to,
			r.command.Seconds(), r.unavailable.Seconds(), r.failed, r.longestGap.Seconds(), r.oldStreaming.Seconds())
	}

	stop()
	if !localcluster.Wait(ctx, o.Timeout, 50*time.Millisecond, streaming) {
		return fmt.Errorf("the cluster did not reach all-streaming within %s after the last run", o.Timeout)
	}
	final, err := c.Primary(ctx)
	if err != nil {
		return err
	}
	have, err := tableIDs(ctx, final, "bench_sw")
	if err != nil {
		return fmt.Errorf("reading bench_sw on %s: %w", final.Name, err)
	}
	all := w.attempts()
	acked, failedTotal, lost := 0, 0, 0
	for _, a := range all {
		if !a.ok {
			failedTotal++
			continue
		}
		acked++
		if _, ok := have[a.id]; !ok {
			lost++
		}
	}

	pick := func(f func(swRun) time.Duration) []time.Duration {
		var d []time.Duration
		for _, r := range runs {
			d = append(d, f(r))
		}
		slices.Sort(d)
		return d
	}
	cmdD := pick(func(r swRun) time.Duration { return r.command })
	unD := pick(func(r swRun) time.Duration { return r.unavailable })
	gapD := pick(func(r swRun) time.Duration { return r.longestGap })
	oldD := pick(func(r swRun) time.Duration { return r.oldStreaming })
	failD := pick(func(r swRun) time.Duration { return time.Duration(r.failed) })

	fmt.Fprintf(o.Out, "\n%-44s %8s %8s %8s %9s  %s\n", "figure (seconds)", "min", "median", "max", "target", "met (median / max)")
	line := func(name string, d []time.Duration, target time.Duration) {
		tcol, met := "—", ""
		if target > 0 {
			tcol, met = fmt.Sprintf("≤ %.2f", target.Seconds()), yesNo(d[len(d)/2] <= target)+" / "+yesNo(d[len(d)-1] <= target)
		}
		l := fmt.Sprintf("%-44s %8.3f %8.3f %8.3f %9s  %s", name, d[0].Seconds(), d[len(d)/2].Seconds(), d[len(d)-1].Seconds(), tcol, met)
		fmt.Fprintln(o.Out, strings.TrimRight(l, " "))
	}
	line("command wall time (POST /switchover)", cmdD, targetCommand)
	line("write unavailability", unD, targetUnavailable)
	line("longest gap between acknowledged writes", gapD, 0)
	line("old primary streaming again (from command)", oldD, targetOldStreaming)
	fmt.Fprintf(o.Out, "%-44s %8d %8d %8d %9s\n", "failed writes per switchover", int(failD[0]), int(failD[len(failD)/2]), int(failD[len(failD)-1]), "—")
	fmt.Fprintf(o.Out, "\nwrites: %d attempted, %d acknowledged, %d failed; %d rows on the final primary %s\n",
		len(all), acked, failedTotal, len(have), final.Name)
	fmt.Fprintf(o.Out, "acknowledged writes lost: %d\n", lost)

	ref := switchoverReference
	fmt.Fprintln(o.Out, "\nPatroni 3.0.2 on this machine type, as the reference gives it (NOT measured by this run):")
	fmt.Fprintf(o.Out, "%-44s %9s %9s %16s\n", "figure", "Patroni", "pgvigil", "ratio (ref/ours)")
	refLine := func(name string, ref time.Duration, ours time.Duration) {
		ratio := "—"
		if ours > 0 {
			ratio = fmt.Sprintf("%.1f×", ref.Seconds()/ours.Seconds())
		}
		fmt.Fprintf(o.Out, "%-44s %8.2fs %8.3fs %16s\n", name, ref.Seconds(), ours.Seconds(), ratio)
	}
	refLine("command wall time (median)", ref.command, cmdD[len(cmdD)/2])
	refLine("write unavailability (median)", ref.unavailable, unD[len(unD)/2])
	refLine("old primary streaming again (median)", ref.oldStreaming, oldD[len(oldD)/2])
	fmt.Fprintf(o.Out, "%-44s %9d %9d\n", "acknowledged writes lost", ref.lost, lost)
	fmt.Fprintln(o.Out, "(unavailability: from the start of the first failed write after the command to the acknowledgement of the")
	fmt.Fprintln(o.Out, "first write that succeeded after it; longest gap: longest span without an acknowledged write from the")
	fmt.Fprintln(o.Out, "command's start until 0.5 s after the old primary streamed again, which also shows writes that were slow")
	fmt.Fprintln(o.Out, "rather than failed)")
	return nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// writeFigures reads the attempts that started in [from, to): unavailability, failed count and
// the longest span without an acknowledged write.
func writeFigures(log []writeAttempt, from, to time.Time) (unavailable time.Duration, failed int, gap time.Duration) {
	var firstFail time.Time
	lastAck := from
	for _, a := range log {
		if a.start.Before(from) || !a.start.Before(to) {
			continue
		}
		if !a.ok {
			failed++
			if firstFail.IsZero() {
				firstFail = a.start
			}
			continue
		}
		if !firstFail.IsZero() && unavailable == 0 {
			unavailable = a.end.Sub(firstFail)
		}
		gap = max(gap, a.end.Sub(lastAck))
		lastAck = a.end
	}
	gap = max(gap, to.Sub(lastAck))
	return unavailable, failed, gap
}

// membersReady reports whether GET /cluster lists n members, all running or streaming.
func membersReady(ctx context.Context, client *http.Client, base string, n int) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/cluster", nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var v struct {
		Members []struct {
			State string `json:"state"`
		} `json:"members"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&v) != nil || len(v.Members) != n {
		return false
	}
	for _, m := range v.Members {
		if m.State != "running" && m.State != "streaming" {
			return false
		}
	}
	return true
}

func postSwitchover(ctx context.Context, client *http.Client, base, leader, candidate string) (int, string, error) {
	body := fmt.Sprintf(`{"leader":%q,"candidate":%q}`, leader, candidate)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/switchover", strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), err
}
