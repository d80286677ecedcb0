// Package demo runs a whole cluster on this machine for people to try: embedded etcd, N nodes,
// a live status line per member, and a failover on request.
package demo

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pgvigil/pgvigil/internal/localcluster"
	"github.com/pgvigil/pgvigil/internal/postgres"
)

// Options for Run.
type Options struct {
	Nodes      int
	Dir        string
	Binary     string
	KillLeader bool          // crash the leader once the cluster is streaming, then restart it
	Duration   time.Duration // stop after this long; 0 = until ctx ends (Ctrl-C)
	In         io.Reader     // commands: "k" kills the leader, "r" restarts stopped nodes, "q" quits
	Out        io.Writer
	// TLS runs the cluster with TLS on every link (localcluster.Options.TLS): generated CA and
	// certificates, etcd with client certificates, the REST API over HTTPS with auth, PostgreSQL
	// with SSL and verify-full replication.
	TLS bool
}

// Run starts the cluster and narrates it until ctx ends.
func Run(ctx context.Context, o Options) error {
	if o.Dir == "" {
		d, err := os.MkdirTemp("", "pgvigil-demo-")
		if err != nil {
			return err
		}
		o.Dir = d
	}
	fmt.Fprintf(o.Out, "pgvigil demo: %d nodes in %s (logs: <dir>/nodeN/pgvigil.log)\n", o.Nodes, o.Dir)
	c, err := localcluster.Start(localcluster.Options{Dir: o.Dir, Nodes: o.Nodes, Binary: o.Binary, TLS: o.TLS})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(o.Out, "stopping: members step down one by one …")
		c.Close()
		fmt.Fprintln(o.Out, "stopped; data kept in", o.Dir)
	}()
	fmt.Fprintf(o.Out, "etcd (embedded): %s\n", strings.Join(c.Etcd.Endpoints(), ","))
	if o.TLS {
		printTLS(o.Out, c)
	} else {
		for _, n := range c.Nodes {
			fmt.Fprintf(o.Out, "%s: psql \"%s\"   REST %s/patroni\n", n.Name, n.DSN(), n.APIURL())
		}
	}
	fmt.Fprintln(o.Out, "type k+Enter to kill the leader (agent and postmaster), r+Enter to restart stopped nodes, q+Enter or Ctrl-C to quit")

	cmds := make(chan string, 4)
	if o.In != nil {
		go func() {
			sc := bufio.NewScanner(o.In)
			for sc.Scan() {
				cmds <- strings.TrimSpace(sc.Text())
			}
		}()
	}
	var end <-chan time.Time
	if o.Duration > 0 {
		end = time.After(o.Duration)
	}
	started := time.Now()
	streaming := false
	killedAt := time.Time{}
	var killed *localcluster.Node
	last := ""
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-end:
			return nil
		case cmd := <-cmds:
			switch cmd {
			case "k":
				killed, killedAt = crashLeader(ctx, c, o.Out)
			case "r":
				restartStopped(c, o.Out)
			case "q":
				return nil
			}
		case <-tick.C:
		}
		line := statusLine(ctx, c)
		if line != last {
			fmt.Fprintf(o.Out, "%6.1fs %s\n", time.Since(started).Seconds(), line)
			last = line
		}
		if !streaming && c.Streaming(ctx) {
			streaming = true
			fmt.Fprintf(o.Out, "all %d members streaming after %.1fs\n", len(c.Nodes), time.Since(started).Seconds())
			// The proxy is the clients' entry point: it follows the leader through the store.
			if px, err := c.StartProxy(ctx, filepath.Join(o.Dir, "proxy"), "pool_mode: transaction\n"); err != nil {
				fmt.Fprintln(o.Out, "proxy did not start:", err)
			} else {
				defer px.Stop()
				printProxy(o.Out, px)
			}
			if o.KillLeader {
				killed, killedAt = crashLeader(ctx, c, o.Out)
			}
		}
		if killed != nil {
			if p, err := c.Primary(ctx); err == nil && p != killed {
				if err := p.Exec(ctx, "SELECT 1"); err == nil {
					fmt.Fprintf(o.Out, "failover: %s is the new primary %.1fs after the crash; restarting %s, it will rewind and follow\n",
						p.Name, time.Since(killedAt).Seconds(), killed.Name)
					if err := c.StartNode(killed); err != nil {
						fmt.Fprintln(o.Out, "restart failed:", err)
					}
					killed = nil
				}
			}
		}
	}
}

func crashLeader(ctx context.Context, c *localcluster.Cluster, out io.Writer) (*localcluster.Node, time.Time) {
	p, err := c.Primary(ctx)
	if err != nil {
		fmt.Fprintln(out, "no single primary to kill:", err)
		return nil, time.Time{}
	}
	fmt.Fprintf(out, "killing %s (SIGKILL to the agent and the postmaster) …\n", p.Name)
	if err := p.Crash(); err != nil {
		fmt.Fprintln(out, "kill failed:", err)
		return nil, time.Time{}
	}
	return p, time.Now()
}

func restartStopped(c *localcluster.Cluster, out io.Writer) {
	for _, n := range c.Nodes {
		if !n.Running() {
			fmt.Fprintf(out, "restarting %s\n", n.Name)
			if err := c.StartNode(n); err != nil {
				fmt.Fprintln(out, "restart failed:", err)
			}
		}
	}
}

// statusLine is one line for the whole cluster: name, role, state, timeline, position.
func statusLine(ctx context.Context, c *localcluster.Cluster) string {
	var parts []string
	for _, n := range c.Nodes {
		st, err := n.Status(ctx)
		if err != nil {
			parts = append(parts, n.Name+" down")
			continue
		}
		state := st.State
		if st.ReplicationState != "" {
			state = st.ReplicationState
		}
		pos := max(st.XLog.Location, st.XLog.Received, st.XLog.Replayed)
		parts = append(parts, fmt.Sprintf("%s %s %s tl%d %s", n.Name, st.Role, state, st.Timeline, postgres.FormatLSN(pos)))
	}
	return strings.Join(parts, " | ")
}

// printTLS shows how to reach a TLS cluster: connection strings that verify the server against
// the demo's CA, and where the credentials are, without printing the passwords themselves.
func printTLS(out io.Writer, c *localcluster.Cluster) {
	fmt.Fprintf(out, "TLS everywhere; CA certificate: %s (certificates and keys beside it)\n", c.CAFile)
	for _, n := range c.Nodes {
		fmt.Fprintf(out, "%s: PGPASSWORD=\"$(cat %s)\" psql \"host=127.0.0.1 port=%d user=%s dbname=postgres sslmode=verify-full sslrootcert=%s\"\n",
			n.Name, n.TLS.SuperPassFile, n.PGPort, localcluster.Superuser, c.CAFile)
		fmt.Fprintf(out, "%s: curl --cacert %s %s/patroni   (unsafe methods: --cert %s --key %s -u %s:<restapi.authentication.password in %s>)\n",
			n.Name, c.CAFile, n.APIURL(), n.TLS.Cert, n.TLS.Key, localcluster.APIUser, n.ConfigPath)
	}
	fmt.Fprintf(out, "operator CLI over HTTPS and etcd mTLS: pgvigil list -c %s\n", c.Nodes[0].ConfigPath)
}

// printProxy shows the proxy's connection strings; under TLS they verify the proxy against the
// demo's CA and take the password from its file, which is not printed.
func printProxy(out io.Writer, px *localcluster.PGProxy) {
	if px.CA == "" {
		fmt.Fprintf(out, "proxy (transaction pooling, SCRAM): read-write psql \"%s\"\n", px.DSN(false))
		fmt.Fprintf(out, "                                     read-only  psql \"%s\"\n", px.DSN(true))
	} else {
		fmt.Fprintf(out, "proxy (transaction pooling, SCRAM, TLS required): read-write PGPASSWORD=\"$(cat %s)\" psql \"%s\"\n", px.PassFile, px.Conninfo(false))
		fmt.Fprintf(out, "                                                   read-only  PGPASSWORD=\"$(cat %s)\" psql \"%s\"\n", px.PassFile, px.Conninfo(true))
	}
	fmt.Fprintf(out, "proxy pools, clients, metrics: http://%s/pools /clients /metrics (log %s)\n", px.HTTP, px.LogPath)
}
