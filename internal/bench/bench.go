// Package bench measures pgvigil on this machine and prints figures; it asserts nothing.
package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

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
}

type sample map[string][]time.Duration

// Failover runs Runs fresh 3-node clusters and times, on each: start → all streaming; SIGKILL
// of the primary (agent and postmaster) → first write accepted elsewhere; restart → streaming;
// SIGTERM of the primary's agent → first write elsewhere; restart → streaming. It ends with
// min/median/max per figure and the agents' resident memory.
func Failover(ctx context.Context, o Options) error {
	if o.Dir == "" {
		d, err := os.MkdirTemp("", "pgvigil-bench-")
		if err != nil {
			return err
		}
		o.Dir = d
		defer os.RemoveAll(d)
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
			return rss, fmt.Errorf("cluster not streaming before %s", kind)
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
	for _, n := range c.Nodes {
		if n != old && n.Exec(ctx, "INSERT INTO bench_writes DEFAULT VALUES") == nil {
			return true
		}
	}
	return false
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
