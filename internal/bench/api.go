package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pgvigil/pgvigil/internal/localcluster"
)

// APIOptions for API.
type APIOptions struct {
	Requests int // sequential GETs per endpoint
	Dir      string
	Binary   string
	Timeout  time.Duration // bound on the cluster reaching all-streaming
	Out      io.Writer
}

// apiReference is Patroni 3.0.2's REST API throughput on this machine type, as the project's
// reference gives it; it is not measured by this run. 0 means the reference has no figure.
var apiReference = []struct {
	path string
	rps  float64
}{{"/patroni", 940}, {"/cluster", 1500}, {"/primary", 0}}

// API starts a local 3-node cluster and, on the leader's REST API, times Requests sequential
// GETs of /patroni, /cluster and /primary, each on a new TCP connection (as HAProxy checks and
// most scrapers connect). It prints requests per second, p50 and p99 latency, and the ratio to
// Patroni 3.0.2's reference figure.
func API(ctx context.Context, o APIOptions) error {
	if o.Dir == "" {
		d, err := os.MkdirTemp("", "pgvigil-bench-api-")
		if err != nil {
			return err
		}
		o.Dir = d
		defer os.RemoveAll(d)
	}
	fmt.Fprintf(o.Out, "pgvigil bench api: 3 nodes, %d sequential GETs per endpoint on the leader, each on a new connection\n", o.Requests)
	fmt.Fprintln(o.Out, "The Patroni column is Patroni 3.0.2's throughput on this machine type as the reference gives it")
	fmt.Fprintln(o.Out, "(/patroni 940 req/s, /cluster 1500 req/s, none for /primary); it was not measured by this run.")
	c, err := localcluster.Start(localcluster.Options{Dir: filepath.Join(o.Dir, "cluster"), Nodes: 3, Binary: o.Binary})
	if err != nil {
		return err
	}
	defer c.Close()
	if !localcluster.Wait(ctx, o.Timeout, 50*time.Millisecond, func() bool { return c.Streaming(ctx) }) {
		return fmt.Errorf("the cluster did not reach all-streaming within %s\n%s", o.Timeout, c.LogTails(30))
	}
	leader, err := c.Primary(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "leader: %s (%s)\n\n", leader.Name, leader.APIURL())

	// The client is a bare socket writing one request and reading to EOF, as ab does: Go's
	// http.Client costs about as much per connection as the server, and would be measured too.
	addr := strings.TrimPrefix(leader.APIURL(), "http://")
	fmt.Fprintf(o.Out, "%-10s %10s %10s %10s %14s %8s\n", "endpoint", "req/s", "p50 (ms)", "p99 (ms)", "Patroni req/s", "ratio")
	for _, ref := range apiReference {
		for range min(50, o.Requests) { // warm-up: not timed
			if _, err := get(addr, ref.path); err != nil {
				return err
			}
		}
		lat := make([]time.Duration, 0, o.Requests)
		bad := 0
		start := time.Now()
		for range o.Requests {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			t0 := time.Now()
			code, err := get(addr, ref.path)
			if err != nil {
				return err
			}
			lat = append(lat, time.Since(t0))
			if code != http.StatusOK {
				bad++
			}
		}
		elapsed := time.Since(start)
		slices.Sort(lat)
		rps := float64(o.Requests) / elapsed.Seconds()
		refCol, ratio := "—", "—"
		if ref.rps > 0 {
			refCol, ratio = fmt.Sprintf("%.0f", ref.rps), fmt.Sprintf("%.2f×", rps/ref.rps)
		}
		fmt.Fprintf(o.Out, "%-10s %10.0f %10.3f %10.3f %14s %8s\n", ref.path, rps, ms(pct(lat, 0.50)), ms(pct(lat, 0.99)), refCol, ratio)
		if bad > 0 {
			fmt.Fprintf(o.Out, "  (%d of %d answers were not 200)\n", bad, o.Requests)
		}
	}
	return nil
}

// get sends one GET on a new connection and returns the status code from the status line.
func get(addr, path string) (int, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: "+addr+"\r\nConnection: close\r\n\r\n"); err != nil {
		return 0, err
	}
	b, err := io.ReadAll(c)
	if err != nil {
		return 0, err
	}
	var proto string
	var code int
	if _, err := fmt.Sscanf(string(b), "%s %d", &proto, &code); err != nil {
		return 0, fmt.Errorf("malformed answer from %s%s: %.40q", addr, path, b)
	}
	return code, nil
}

// pct is the q-quantile of sorted durations (nearest rank).
func pct(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
