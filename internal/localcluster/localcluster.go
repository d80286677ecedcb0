// Package localcluster runs a whole pgvigil cluster on one machine: etcd's own server embedded,
// and N real `pgvigil node` processes with real PostgreSQL. The demo, the benchmarks and the
// end-to-end tests all stand on it.
package localcluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pgvigil/pgvigil/internal/certs"
	"github.com/pgvigil/pgvigil/internal/dcs"
	"github.com/pgvigil/pgvigil/internal/embedetcd"
)

// Passwords of the demo roles. They only ever guard loopback servers started by this package.
const (
	Superuser    = "postgres"
	SuperPass    = "vigil-super"
	Replicator   = "replicator"
	ReplPass     = "vigil-repl"
	DefaultScope = "demo"
)

// Options shape the cluster.
type Options struct {
	Dir          string // everything lives here; must be traversable by the PostgreSQL OS user
	Nodes        int
	Binary       string // the pgvigil executable
	Scope        string
	TTL          int
	LoopWait     int
	RetryTimeout int
	// Extra YAML appended to every node's configuration.
	Extra string
	// Callbacks installs a script per node that appends "<event> <role> <scope>" to CallbackLog.
	Callbacks bool
	// Partitionable routes each node's links through proxies (its etcd connection, and the
	// addresses other members use for its PostgreSQL and REST API), so Isolate can cut it off.
	Partitionable bool
	// Prepare runs for every node after its configuration is written and before any node starts:
	// a test seeds a data directory there (an existing server to adopt) or edits the file.
	Prepare func(n *Node) error
	// Deferred names nodes that Start configures but does not launch; the caller starts them
	// with StartNode (to bring members up in a chosen order).
	Deferred []string
	// CallbacksTimeout sets postgresql.callbacks_timeout (seconds) when positive.
	CallbacksTimeout int
	// DCSExtra is YAML placed under bootstrap.dcs, each line indented by four spaces
	// (standby_cluster, for instance).
	DCSExtra string
	// NodeExtra is YAML appended to one node's configuration, by node name (node1, node2 …).
	NodeExtra map[string]string
	// EtcdTLS serves etcd over TLS with client-certificate authentication; every node (and
	// StoreValue) connects with a certificate from the cluster's own CA, in Dir/tls.
	EtcdTLS bool
	// TLS is TLS everywhere (see tls.go): etcd with client certificates, the REST API over
	// HTTPS with client verification and Basic auth, PostgreSQL with SSL and verify-full
	// replication. It implies EtcdTLS.
	TLS bool
	// ReplicationCertAuth, with TLS, makes the replication role log in with a client
	// certificate instead of its password.
	ReplicationCertAuth bool
	// MaxConnections is PostgreSQL's max_connections (default 50).
	MaxConnections int
}

// Node is one member: its ports, files and process.
type Node struct {
	Name       string
	Dir        string
	DataDir    string
	ConfigPath string
	LogPath    string
	// CallbackLog collects the node's callback invocations when Options.Callbacks is set.
	CallbackLog string
	PGPort      int
	APIPort     int

	proxies []*Proxy // with Options.Partitionable: etcd, PostgreSQL and REST links

	// TLS holds the node's files when Options.TLS is set; nil otherwise.
	TLS    *NodeTLS
	client *http.Client // for its REST API: with the cluster CA and a client certificate under TLS

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Cluster is the running set.
type Cluster struct {
	opts  Options
	Etcd  *embedetcd.Server
	Nodes []*Node
	// EtcdTLS are the CA, certificate and key for etcd when Options.EtcdTLS is set.
	EtcdTLS *certs.Files
	// CA is the cluster CA (Options.TLS): its certificate file and the CA itself, to issue more.
	CAFile string
	CA     *certs.CA
}

// FreePort asks the kernel for an unused loopback port.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Start launches etcd and every node, and returns once the processes are started (not yet healthy).
func Start(opts Options) (*Cluster, error) {
	if opts.Scope == "" {
		opts.Scope = DefaultScope
	}
	if opts.TTL == 0 {
		opts.TTL, opts.LoopWait, opts.RetryTimeout = 10, 1, 3
	}
	if opts.MaxConnections == 0 {
		opts.MaxConnections = 50
	}
	// #nosec G301 -- PostgreSQL runs as another OS user and must traverse the cluster directory
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, err
	}
	// PostgreSQL runs as an unprivileged user when we are root; it must reach its directories.
	for d := opts.Dir; d != "/" && d != "."; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o001 == 0 {
			_ = os.Chmod(d, fi.Mode().Perm()|0o011)
		}
	}
	var tlsFiles *certs.Files
	var srv *embedetcd.Server
	var err error
	var ca *certs.CA
	if opts.TLS {
		if ca, tlsFiles, err = startPKI(filepath.Join(opts.Dir, "tls")); err != nil {
			return nil, err
		}
		srv, err = embedetcd.StartTLS(filepath.Join(opts.Dir, "etcd"), tlsFiles.Cert, tlsFiles.Key, tlsFiles.CA, true)
		if err != nil {
			return nil, fmt.Errorf("while starting embedded etcd with TLS: %w", err)
		}
	} else if opts.EtcdTLS {
		dir := filepath.Join(opts.Dir, "tls")
		// #nosec G301 -- PostgreSQL runs as another OS user and must traverse this directory
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		f, err := certs.WriteSet(dir, "etcd", []string{"127.0.0.1", "localhost"}, 24*time.Hour)
		if err != nil {
			return nil, err
		}
		tlsFiles = &f
		srv, err = embedetcd.StartTLS(filepath.Join(opts.Dir, "etcd"), f.Cert, f.Key, f.CA, true)
		if err != nil {
			return nil, fmt.Errorf("while starting embedded etcd with TLS: %w", err)
		}
	} else if srv, err = embedetcd.Start(filepath.Join(opts.Dir, "etcd")); err != nil {
		return nil, fmt.Errorf("while starting embedded etcd: %w", err)
	}
	c := &Cluster{opts: opts, Etcd: srv, EtcdTLS: tlsFiles, CA: ca}
	if ca != nil {
		c.CAFile = tlsFiles.CA
	}
	for i := 1; i <= opts.Nodes; i++ {
		n, err := c.newNode(fmt.Sprintf("node%d", i))
		if err != nil {
			c.Close()
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
	}
	for _, n := range c.Nodes {
		if opts.Prepare == nil {
			break
		}
		if err := opts.Prepare(n); err != nil {
			c.Close()
			return nil, fmt.Errorf("while preparing %s: %w", n.Name, err)
		}
	}
	for _, n := range c.Nodes {
		if slices.Contains(opts.Deferred, n.Name) {
			continue
		}
		if err := c.StartNode(n); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

func (c *Cluster) newNode(name string) (*Node, error) {
	pg, err := FreePort()
	if err != nil {
		return nil, err
	}
	apiPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(c.opts.Dir, name)
	// #nosec G301 -- PostgreSQL runs as another OS user and must traverse the node directory
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	_ = os.Chmod(dir, 0o755) // #nosec G302 -- PostgreSQL runs as another OS user and must traverse the node directory
	n := &Node{Name: name, Dir: dir, DataDir: filepath.Join(dir, "data"), ConfigPath: filepath.Join(dir, "pgvigil.yaml"),
		LogPath: filepath.Join(dir, "pgvigil.log"), CallbackLog: filepath.Join(dir, "callbacks.log"), PGPort: pg, APIPort: apiPort,
		client: http.DefaultClient}
	tlsYAML := c.etcdTLSYAML()
	restYAML, pgYAML, superYAML, replYAML := "", "", fmt.Sprintf("password: %s", SuperPass), ""
	if c.opts.TLS {
		var err error
		if n.TLS, err = c.issueNode(n); err != nil {
			return nil, err
		}
		if n.client, err = n.TLS.HTTPClient(); err != nil {
			return nil, err
		}
		tlsYAML, restYAML, pgYAML, superYAML, replYAML = c.tlsYAML(n)
	}
	callbacks := ""
	if c.opts.Callbacks {
		script := filepath.Join(dir, "callback.sh")
		body := fmt.Sprintf("#!/bin/sh\necho \"$@\" >> %s\n", n.CallbackLog)
		// #nosec G306 -- the callback script must be executable; it holds no secret
		if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
			return nil, err
		}
		callbacks = "  callbacks:\n"
		if c.opts.CallbacksTimeout > 0 {
			callbacks = fmt.Sprintf("  callbacks_timeout: %d\n", c.opts.CallbacksTimeout) + callbacks
		}
		for _, ev := range []string{"on_start", "on_stop", "on_restart", "on_reload", "on_role_change"} {
			callbacks += fmt.Sprintf("    %s: %s\n", ev, script)
		}
	}
	etcdHosts := strings.Join(c.Etcd.Endpoints(), ",")
	pgConnect, apiConnect := fmt.Sprintf("127.0.0.1:%d", pg), fmt.Sprintf("127.0.0.1:%d", apiPort)
	if c.opts.Partitionable {
		for _, link := range []struct {
			target string
			addr   *string
		}{{c.Etcd.Endpoints()[0], &etcdHosts}, {pgConnect, &pgConnect}, {apiConnect, &apiConnect}} {
			px, err := NewProxy(link.target)
			if err != nil {
				return nil, err
			}
			n.proxies = append(n.proxies, px)
			*link.addr = px.Addr()
		}
	}
	cfg := fmt.Sprintf(`scope: %s
name: %s
restapi:
  listen: 127.0.0.1:%d
  connect_address: %s%s
etcd3:
  hosts: %s%s
bootstrap:
  dcs:
    ttl: %d
    loop_wait: %d
    retry_timeout: %d
    postgresql:
      use_pg_rewind: true
      use_slots: true
%spostgresql:
  listen: 127.0.0.1:%d
  connect_address: %s
  data_dir: %s
  authentication:
    superuser: {username: %s, %s}
    replication: {username: %s, password: %s%s}
  parameters:
    shared_buffers: 32MB
    max_connections: %d
%s%s%s`, c.opts.Scope, name, apiPort, apiConnect, restYAML, etcdHosts, tlsYAML, c.opts.TTL, c.opts.LoopWait, c.opts.RetryTimeout,
		c.opts.DCSExtra, pg, pgConnect, n.DataDir, Superuser, superYAML, Replicator, ReplPass, replYAML, c.opts.MaxConnections, pgYAML, callbacks, c.opts.Extra+c.opts.NodeExtra[name])
	return n, os.WriteFile(n.ConfigPath, []byte(cfg), 0o600)
}

// StartNode launches the node's agent process; its output is appended to LogPath.
func (c *Cluster) StartNode(n *Node) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		return fmt.Errorf("%s is already running", n.Name)
	}
	logf, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.opts.Binary, "node", "-c", n.ConfigPath) // #nosec G204 -- the pgvigil binary the harness was given
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // a terminal's Ctrl-C goes to the demo, which stops nodes in order
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return fmt.Errorf("while starting %s: %w", n.Name, err)
	}
	n.cmd, n.done = cmd, make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		_ = cmd.Wait()
		_ = logf.Close()
		close(done)
		n.mu.Lock()
		if n.cmd == cmd {
			n.cmd = nil
		}
		n.mu.Unlock()
	}(cmd, n.done)
	return nil
}

// StopNode stops a node's agent gracefully and waits for it (bounded).
func (c *Cluster) StopNode(n *Node) error {
	return n.Signal(syscall.SIGTERM, 90*time.Second)
}

// Running reports whether the agent process is alive.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil
}

// AgentPID is the agent's process id, or 0.
func (n *Node) AgentPID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// PostmasterPID reads postmaster.pid; 0 when there is none or the process is gone.
func (n *Node) PostmasterPID() int {
	b, err := os.ReadFile(filepath.Join(n.DataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil || syscall.Kill(pid, 0) != nil {
		return 0
	}
	return pid
}

// Signal sends sig to the agent and waits up to wait for it to exit (0: do not wait).
func (n *Node) Signal(sig syscall.Signal, wait time.Duration) error {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil {
		return nil
	}
	if err := cmd.Process.Signal(sig); err != nil {
		return err
	}
	if wait == 0 {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-time.After(wait):
		return fmt.Errorf("%s did not exit within %s after %s", n.Name, wait, sig)
	}
}

// Crash kills the agent and its postmaster with SIGKILL, like a host losing power. The
// postmaster's children exit on their own once it is gone.
func (n *Node) Crash() error {
	pm := n.PostmasterPID()
	if err := n.Signal(syscall.SIGKILL, 10*time.Second); err != nil {
		return err
	}
	if pm != 0 {
		_ = syscall.Kill(pm, syscall.SIGKILL)
	}
	return nil
}

// Isolate cuts the node off the network: from the store, and from the other members (its
// PostgreSQL and REST API as they reach them). Clients connecting to its own ports still reach it.
func (n *Node) Isolate() {
	for _, p := range n.proxies {
		p.Cut()
	}
}

// Reconnect undoes Isolate.
func (n *Node) Reconnect() {
	for _, p := range n.proxies {
		p.Heal()
	}
}

// KillAgent SIGKILLs the agent alone, leaving its PostgreSQL (and its watchdog) running.
func (n *Node) KillAgent() error { return n.Signal(syscall.SIGKILL, 10*time.Second) }

// DSN is a libpq connection string to the node's PostgreSQL as the superuser; under TLS it
// verifies the server against the cluster CA (sslmode=verify-full).
func (n *Node) DSN() string {
	ssl := "sslmode=disable"
	if n.TLS != nil {
		ssl = "sslmode=verify-full sslrootcert=" + n.TLS.CA
	}
	return fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=%s dbname=postgres %s connect_timeout=2",
		n.PGPort, Superuser, SuperPass, ssl)
}

// APIURL is the base URL of the node's REST API.
func (n *Node) APIURL() string {
	if n.TLS != nil {
		return fmt.Sprintf("https://127.0.0.1:%d", n.APIPort)
	}
	return fmt.Sprintf("http://127.0.0.1:%d", n.APIPort)
}

// HTTPClient is a client for the node's REST API (trusting the cluster CA under TLS).
func (n *Node) HTTPClient() *http.Client { return n.client }

// NodeStatus is the part of GET /patroni the harness reads.
type NodeStatus struct {
	State            string `json:"state"`
	Role             string `json:"role"`
	Timeline         int    `json:"timeline"`
	ReplicationState string `json:"replication_state"`
	XLog             struct {
		Location int64 `json:"location"`
		Received int64 `json:"received_location"`
		Replayed int64 `json:"replayed_location"`
	} `json:"xlog"`
}

// Status asks the node's REST API.
func (n *Node) Status(ctx context.Context) (*NodeStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.APIURL()+"/patroni", nil)
	resp, err := n.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var st NodeStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Check asks a health endpoint and returns the status code.
func (n *Node) Check(ctx context.Context, path string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.APIURL()+path, nil)
	resp, err := n.client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// Exec runs one statement on the node and reports whether the server accepted it.
func (n *Node) Exec(ctx context.Context, sql string, args ...any) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, n.DSN())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

// ExecWait runs one statement bounded only by ctx (a commit that waits for a synchronous standby).
func (n *Node) ExecWait(ctx context.Context, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, n.DSN())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

// QueryInt runs a query returning one integer.
func (n *Node) QueryInt(ctx context.Context, sql string, args ...any) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, n.DSN())
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var v int64
	err = conn.QueryRow(ctx, sql, args...).Scan(&v)
	return v, err
}

// Primary returns the node whose REST API answers 200 on /primary, if exactly one does.
func (c *Cluster) Primary(ctx context.Context) (*Node, error) {
	var found []*Node
	for _, n := range c.Nodes {
		if code, err := n.Check(ctx, "/primary"); err == nil && code == http.StatusOK {
			found = append(found, n)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return nil, errors.New("no primary")
	}
	return nil, fmt.Errorf("%d primaries", len(found))
}

// Streaming reports whether every node except the primary reports replication_state streaming.
func (c *Cluster) Streaming(ctx context.Context, nodes ...*Node) bool {
	if len(nodes) == 0 {
		nodes = c.Nodes
	}
	primaries := 0
	for _, n := range nodes {
		st, err := n.Status(ctx)
		if err != nil || st.State != "running" {
			return false
		}
		if st.Role == "primary" {
			primaries++
			continue
		}
		if st.ReplicationState != "streaming" {
			return false
		}
	}
	return primaries == 1
}

// Wait polls cond every interval until it holds or timeout passes.
func Wait(ctx context.Context, timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(interval)
	}
}

// Close stops every node gracefully (SIGTERM, bounded), then kills what is left, then etcd.
func (c *Cluster) Close() {
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		wg.Add(1)
		go func(n *Node) {
			defer wg.Done()
			if err := n.Signal(syscall.SIGTERM, 60*time.Second); err != nil {
				_ = n.Signal(syscall.SIGKILL, 10*time.Second)
			}
			// A postmaster whose agent was killed keeps running; it is ours, stop it by its PID.
			if pm := n.PostmasterPID(); pm != 0 {
				_ = syscall.Kill(pm, syscall.SIGQUIT)
				Wait(context.Background(), 10*time.Second, 50*time.Millisecond, func() bool { return n.PostmasterPID() == 0 })
			}
		}(n)
	}
	wg.Wait()
	c.Etcd.Close()
	for _, n := range c.Nodes {
		for _, p := range n.proxies {
			p.Close()
		}
	}
}

// StoreValue reads one key under the cluster's prefix straight from etcd ("" when absent).
func (c *Cluster) StoreValue(ctx context.Context, key string) (string, error) {
	cfg := clientv3.Config{Endpoints: []string{c.Etcd.ClientURL()}, DialTimeout: 3 * time.Second}
	if f := c.EtcdTLS; f != nil {
		pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return "", err
		}
		pem, err := os.ReadFile(f.CA)
		if err != nil {
			return "", err
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		cfg.TLS = &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return "", err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, dcs.Prefix("/service/", c.opts.Scope)+key)
	if err != nil || len(resp.Kvs) == 0 {
		return "", err
	}
	return string(resp.Kvs[0].Value), nil
}

// etcdTLSYAML is the etcd3 TLS settings of a node's configuration (empty without TLS).
func (c *Cluster) etcdTLSYAML() string {
	f := c.EtcdTLS
	if f == nil {
		return ""
	}
	return fmt.Sprintf("\n  protocol: https\n  cacert: %s\n  cert: %s\n  key: %s", f.CA, f.Cert, f.Key)
}

// LogTails returns the last n lines of every node's log, for error messages of commands that
// gave up waiting on the cluster: the reason is usually in there.
func (c *Cluster) LogTails(n int) string {
	var b strings.Builder
	for _, nd := range c.Nodes {
		out, err := os.ReadFile(nd.LogPath)
		if err != nil {
			fmt.Fprintf(&b, "--- %s log: %v\n", nd.Name, err)
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		fmt.Fprintf(&b, "--- %s log (last %d lines of %s)\n%s\n", nd.Name, n, nd.LogPath, strings.Join(lines[max(0, len(lines)-n):], "\n"))
	}
	return b.String()
}
