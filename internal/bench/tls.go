package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgvigil/pgvigil/internal/localcluster"
)

// TLSOptions for TLS.
type TLSOptions struct {
	Connects int // sequential new connections per link
	Dir      string
	Binary   string
	Timeout  time.Duration // bound on each step (streaming, failover)
	Out      io.Writer
}

// tlsFigures are one cluster's measurements.
type tlsFigures struct {
	bootstrap, failover time.Duration
	pgConnect, api      []time.Duration
}

// TLS measures what TLS everywhere costs: the same figures on a plain local 3-node cluster (the
// baseline) and on one with TLS on every link (localcluster.Options.TLS), then their ratio.
// Figures: start to all members streaming; a new PostgreSQL connection plus SELECT 1 on the
// leader (sslmode=disable vs verify-full); a GET /patroni on a new connection (HTTP vs HTTPS with
// a client certificate); and a SIGKILL of the leader to the first write accepted elsewhere.
func TLS(ctx context.Context, o TLSOptions) error {
	if o.Dir == "" {
		d, err := os.MkdirTemp("", "pgvigil-bench-tls-")
		if err != nil {
			return err
		}
		o.Dir = d
		defer os.RemoveAll(d)
	}
	fmt.Fprintf(o.Out, "pgvigil bench tls: two fresh 3-node clusters, plain then TLS everywhere; %d sequential new connections per link\n", o.Connects)
	var res [2]tlsFigures
	for i, on := range []bool{false, true} {
		name := map[bool]string{false: "plain", true: "tls"}[on]
		f, err := measureTLS(ctx, o, filepath.Join(o.Dir, name), on)
		if err != nil {
			return fmt.Errorf("%s cluster: %w", name, err)
		}
		res[i] = f
	}
	fmt.Fprintf(o.Out, "\n%-38s %12s %12s %8s\n", "figure (ms)", "plain", "TLS", "TLS/plain")
	row := func(label string, a, b time.Duration) {
		ratio := "-"
		if a > 0 {
			ratio = fmt.Sprintf("%.2f", float64(b)/float64(a))
		}
		fmt.Fprintf(o.Out, "%-38s %12.2f %12.2f %8s\n", label, ms(a), ms(b), ratio)
	}
	row("start to all streaming", res[0].bootstrap, res[1].bootstrap)
	row("PostgreSQL connect + SELECT 1, p50", quantile(res[0].pgConnect, .5), quantile(res[1].pgConnect, .5))
	row("PostgreSQL connect + SELECT 1, p99", quantile(res[0].pgConnect, .99), quantile(res[1].pgConnect, .99))
	row("GET /patroni, new connection, p50", quantile(res[0].api, .5), quantile(res[1].api, .5))
	row("GET /patroni, new connection, p99", quantile(res[0].api, .99), quantile(res[1].api, .99))
	row("SIGKILL leader to a write elsewhere", res[0].failover, res[1].failover)
	return nil
}

// quantile sorts a copy of d and takes its q-quantile.
func quantile(d []time.Duration, q float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return pct(s, q)
}

func measureTLS(ctx context.Context, o TLSOptions, dir string, on bool) (tlsFigures, error) {
	var f tlsFigures
	t0 := time.Now()
	c, err := localcluster.Start(localcluster.Options{Dir: dir, Nodes: 3, Binary: o.Binary, TLS: on})
	if err != nil {
		return f, err
	}
	defer c.Close()
	if !localcluster.Wait(ctx, o.Timeout, 20*time.Millisecond, func() bool { return c.Streaming(ctx) }) {
		return f, fmt.Errorf("not all streaming within %s\n%s", o.Timeout, c.LogTails(30))
	}
	f.bootstrap = time.Since(t0)
	leader, err := c.Primary(ctx)
	if err != nil {
		return f, err
	}
	fmt.Fprintf(o.Out, "%s: all streaming after %.1fs; leader %s\n", map[bool]string{false: "plain", true: "tls"}[on],
		f.bootstrap.Seconds(), leader.Name)

	for i := range o.Connects + 10 { // the first 10 warm up and are not kept
		start := time.Now()
		conn, err := pgx.Connect(ctx, leader.DSN())
		if err != nil {
			return f, fmt.Errorf("connect to PostgreSQL: %w", err)
		}
		var one int
		err = conn.QueryRow(ctx, "SELECT 1").Scan(&one)
		_ = conn.Close(context.Background())
		if err != nil {
			return f, err
		}
		if i >= 10 {
			f.pgConnect = append(f.pgConnect, time.Since(start))
		}
	}

	client := leader.HTTPClient()
	fresh := &http.Client{Timeout: 5 * time.Second, Transport: http.DefaultTransport.(*http.Transport).Clone()}
	if tr, ok := client.Transport.(*http.Transport); ok {
		fresh.Transport = tr.Clone()
	}
	fresh.Transport.(*http.Transport).DisableKeepAlives = true
	for i := range o.Connects + 10 {
		start := time.Now()
		resp, err := fresh.Get(leader.APIURL() + "/patroni")
		if err != nil {
			return f, fmt.Errorf("GET /patroni: %w", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if i >= 10 {
			f.api = append(f.api, time.Since(start))
		}
	}

	if err := leader.Crash(); err != nil {
		return f, err
	}
	killed := time.Now()
	ok := localcluster.Wait(ctx, o.Timeout, 20*time.Millisecond, func() bool {
		p, err := c.Primary(ctx)
		return err == nil && p != leader && p.Exec(ctx, "CREATE TABLE IF NOT EXISTS bench_tls (x int)") == nil
	})
	if !ok {
		return f, fmt.Errorf("no write accepted elsewhere within %s of the crash", o.Timeout)
	}
	f.failover = time.Since(killed)
	return f, nil
}
