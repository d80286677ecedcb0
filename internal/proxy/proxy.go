// Package proxy is pgvigil's client entry point: a PostgreSQL wire-protocol router and pooler
// that follows the cluster's leader through the store and holds clients across switchovers.
package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pgvigil/pgvigil/internal/certs"
	"github.com/pgvigil/pgvigil/internal/config"
	"github.com/pgvigil/pgvigil/internal/dcs"
	"github.com/pgvigil/pgvigil/internal/dcs/etcd"
	"github.com/pgvigil/pgvigil/internal/redact"
)

// Proxy is one running proxy. It keeps no state that another proxy would need: several can
// run side by side in front of the same cluster.
type Proxy struct {
	cfg    *config.Proxy
	log    *slog.Logger
	users  Userlist
	router *router
	met    *metricSet
	ctx    context.Context

	// listenerCert is the certificate offered to clients (nil without tls.cert); rest is the
	// client for the members' REST APIs, replaced whole when its TLS files are re-read.
	listenerCert *certs.Reloader
	rest         atomic.Pointer[http.Client]

	nclients atomic.Int64
	nextID   atomic.Uint64

	cmu     sync.Mutex
	clients map[uint64]*client // by cancel key

	bmu      sync.Mutex
	backends map[backendKey]*backend

	pmu    sync.Mutex
	params map[string]map[string]string // server parameters by database

	rwLn, roLn, httpLn net.Listener

	authState
}

// New validates what the configuration names (auth file, certificate) and binds the listeners.
func New(cfg *config.Proxy, log *slog.Logger) (*Proxy, error) {
	p := &Proxy{cfg: cfg, log: log, router: newRouter(cfg.ReadOnly.Balance), clients: map[uint64]*client{},
		backends: map[backendKey]*backend{}, params: map[string]map[string]string{}, users: Userlist{}}
	p.met = newMetrics(p)
	if cfg.Auth.File != "" {
		u, err := LoadUserlist(cfg.Auth.File)
		if err != nil {
			return nil, fmt.Errorf("auth.file: %w", err)
		}
		p.users = u
	}
	if err := p.initAuth(); err != nil {
		return nil, err
	}
	// The proxy holds its users' passwords and the store's: none of them may reach its log.
	secrets := append(cfg.Secrets(), p.users.Passwords()...)
	if p.authPassword != "" {
		secrets = append(secrets, p.authPassword)
	}
	p.log = slog.New(redact.New(secrets...).Handler(log.Handler()))
	if cfg.TLS.Cert != "" {
		r, err := certs.NewReloader(cfg.TLS.Cert, cfg.TLS.Key, "")
		if err != nil {
			return nil, fmt.Errorf("tls.cert: %w", err)
		}
		p.listenerCert = r
	}
	if err := p.loadRESTClient(); err != nil {
		return nil, err
	}
	var err error
	if p.rwLn, err = net.Listen("tcp", cfg.Listen.ReadWrite); err != nil {
		return nil, fmt.Errorf("listen.read_write: %w", err)
	}
	if cfg.Listen.ReadOnly != "" {
		if p.roLn, err = net.Listen("tcp", cfg.Listen.ReadOnly); err != nil {
			_ = p.rwLn.Close() // best effort cleanup; the listen error is the one to report
			return nil, fmt.Errorf("listen.read_only: %w", err)
		}
	}
	if cfg.Listen.HTTP != "" {
		if p.httpLn, err = net.Listen("tcp", cfg.Listen.HTTP); err != nil {
			_ = p.rwLn.Close() // best effort cleanup; the listen error is the one to report
			if p.roLn != nil {
				_ = p.roLn.Close()
			}
			return nil, fmt.Errorf("listen.http: %w", err)
		}
	}
	return p, nil
}

// Addrs returns the bound addresses (read-write, read-only, http; empty when not listening).
func (p *Proxy) Addrs() (rw, ro, httpAddr string) {
	rw = p.rwLn.Addr().String()
	if p.roLn != nil {
		ro = p.roLn.Addr().String()
	}
	if p.httpLn != nil {
		httpAddr = p.httpLn.Addr().String()
	}
	return rw, ro, httpAddr
}

// ReloadTLS re-reads the certificate offered to clients and the REST API client's CA file and
// certificate (SIGHUP); the next handshakes use them. A file that fails to load leaves what was
// in service, and the error names it.
func (p *Proxy) ReloadTLS() error {
	var errs []error
	if p.listenerCert != nil {
		if err := p.listenerCert.Reload(); err != nil {
			errs = append(errs, fmt.Errorf("tls.cert: %w", err))
		}
	}
	if err := p.loadRESTClient(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// loadRESTClient builds the client for the members' REST APIs from the restapi section: the
// members' certificates are verified against restapi.cafile (the system's CAs when empty), and
// restapi.certfile is presented to APIs that ask for a client certificate. The certificate is
// served through a reloader, so a renewed file reaches new connections even before a SIGHUP.
func (p *Proxy) loadRESTClient() error {
	r := p.cfg.RestAPI
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if r.CAFile != "" {
		b, err := os.ReadFile(r.CAFile) // #nosec G304 -- the CA file named by restapi.cafile
		if err != nil {
			return fmt.Errorf("restapi.cafile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return fmt.Errorf("restapi.cafile: %s holds no PEM certificates", r.CAFile)
		}
		tc.RootCAs = pool
	}
	if r.CertFile != "" {
		cert, err := certs.NewReloader(r.CertFile, r.KeyFile, "")
		if err != nil {
			return fmt.Errorf("restapi.certfile: %w", err)
		}
		tc.GetClientCertificate = cert.GetClientCertificate
	}
	old := p.rest.Swap(&http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, IdleConnTimeout: time.Minute}})
	if old != nil {
		// Kept-alive connections still carry the old certificates; the next request dials anew.
		old.CloseIdleConnections()
	}
	return nil
}

// Run serves until ctx ends, following the cluster through store.
func (p *Proxy) Run(ctx context.Context, store dcs.Store) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p.ctx = ctx
	top := &topology{p: p, store: store}
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); top.run(ctx) }()
	go func() { defer wg.Done(); p.reaper(ctx) }()
	go func() { defer wg.Done(); <-ctx.Done(); p.shutdown() }()
	if p.httpLn != nil {
		srv := &http.Server{Handler: p.adminHandler(), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(p.httpLn) }()
		defer srv.Close()
	}
	if p.roLn != nil {
		go p.accept(p.roLn, true)
	}
	p.log.Info("proxy listening", "read_write", p.rwLn.Addr().String(), "read_only", addrOf(p.roLn), "http", addrOf(p.httpLn),
		"pool_mode", p.cfg.PoolMode)
	p.accept(p.rwLn, false)
	cancel()
	wg.Wait()
	return nil
}

func addrOf(l net.Listener) string {
	if l == nil {
		return ""
	}
	return l.Addr().String()
}

func (p *Proxy) accept(ln net.Listener, ro bool) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			p.log.Warn("accept failed", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetNoDelay(true)
		}
		conn = newRawTCP(conn)
		go p.serveClient(conn, ro)
	}
}

// shutdown closes the listeners and every connection.
func (p *Proxy) shutdown() {
	// Best effort throughout: the proxy is stopping and a failed close has no remedy.
	_ = p.rwLn.Close()
	if p.roLn != nil {
		_ = p.roLn.Close()
	}
	p.cmu.Lock()
	for _, c := range p.clients {
		_ = c.conn.Close()
	}
	p.cmu.Unlock()
	p.bmu.Lock()
	bs := make([]*backend, 0, len(p.backends))
	for _, b := range p.backends {
		bs = append(bs, b)
	}
	p.bmu.Unlock()
	for _, b := range bs {
		b.retire()
	}
	if p.aq != nil {
		p.aq.close()
	}
}

// reaper closes idle server connections past server_idle_timeout or server_lifetime.
func (p *Proxy) reaper(ctx context.Context) {
	every := min(time.Second, p.cfg.ServerIdleTimeout.D()/2)
	t := time.NewTicker(max(every, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for _, pl := range p.allPools() {
				pl.reap(now, p.cfg.ServerIdleTimeout.D(), p.cfg.ServerLifetime.D())
			}
			if p.aq != nil {
				p.aq.reap(now)
			}
		}
	}
}

func (p *Proxy) allPools() []*pool {
	p.bmu.Lock()
	bs := make([]*backend, 0, len(p.backends))
	for _, b := range p.backends {
		bs = append(bs, b)
	}
	p.bmu.Unlock()
	var out []*pool
	for _, b := range bs {
		b.mu.Lock()
		for _, pl := range b.pools {
			out = append(out, pl)
		}
		b.mu.Unlock()
	}
	return out
}

func (p *Proxy) register(c *client) {
	p.cmu.Lock()
	p.clients[c.key] = c
	p.cmu.Unlock()
}

func (p *Proxy) unregister(c *client) {
	p.cmu.Lock()
	delete(p.clients, c.key)
	p.cmu.Unlock()
}

// cancel routes a CancelRequest carrying the key the proxy gave a client to the server that
// client is attached to, with that server's own key.
func (p *Proxy) cancel(pid uint32, secret []byte) {
	if len(secret) < 4 {
		return
	}
	key := uint64(pid)<<32 | uint64(secret[0])<<24 | uint64(secret[1])<<16 | uint64(secret[2])<<8 | uint64(secret[3])
	p.cmu.Lock()
	c := p.clients[key]
	p.cmu.Unlock()
	if c == nil {
		return
	}
	s := c.attached.Load()
	if s == nil {
		return
	}
	s.mu.Lock()
	mine := s.client == c
	s.mu.Unlock()
	if mine {
		s.cancel()
	}
}

func (p *Proxy) rememberParams(db string, ps map[string]string) {
	p.pmu.Lock()
	if p.params[db] == nil {
		p.params[db] = maps.Clone(ps)
	}
	p.pmu.Unlock()
}

func (p *Proxy) knownParams(db string) map[string]string {
	p.pmu.Lock()
	defer p.pmu.Unlock()
	return p.params[db]
}

// Pause holds new transactions until Resume (PgBouncer's PAUSE); running ones finish.
func (p *Proxy) Pause() { p.router.update(func() { p.router.paused = true }); p.met.paused.Set(1) }

// Resume releases transactions held by Pause.
func (p *Proxy) Resume() { p.router.update(func() { p.router.paused = false }); p.met.paused.Set(0) }

// PoolInfo is one row of GET /pools.
type PoolInfo struct {
	Member   string `json:"member"`
	Addr     string `json:"addr"`
	Role     string `json:"role"`
	Database string `json:"database"`
	User     string `json:"user"`
	Size     int    `json:"pool_size"`
	Active   int    `json:"server_active"`
	Idle     int    `json:"server_idle"`
	Waiting  int    `json:"client_waiting"`
}

// ClientInfo is one row of GET /clients.
type ClientInfo struct {
	Addr     string `json:"addr"`
	User     string `json:"user"`
	Database string `json:"database"`
	Listener string `json:"listener"`
	Mode     string `json:"pool_mode"`
	State    string `json:"state"`
	TLS      bool   `json:"tls"`
	Since    string `json:"connect_time"`
	Server   string `json:"server,omitempty"`
	// Debug detail of the attached server: answers awaited, transaction status, queued ops.
	Awaiting int    `json:"server_awaiting,omitempty"`
	TxStatus string `json:"server_tx_status,omitempty"`
	Pending  int    `json:"server_pending_ops,omitempty"`
	Unsynced bool   `json:"server_unsynced,omitempty"`
}

// Pools lists every pool.
func (p *Proxy) Pools() []PoolInfo {
	p.bmu.Lock()
	bs := make([]*backend, 0, len(p.backends))
	for _, b := range p.backends {
		bs = append(bs, b)
	}
	p.bmu.Unlock()
	out := []PoolInfo{}
	for _, b := range bs {
		b.mu.Lock()
		pools := make([]*pool, 0, len(b.pools))
		for _, pl := range b.pools {
			pools = append(pools, pl)
		}
		b.mu.Unlock()
		for _, pl := range pools {
			a, i, w, _ := pl.counts()
			role := "read-write"
			if b.ro {
				role = "read-only"
			}
			out = append(out, PoolInfo{Member: b.member, Addr: b.addr, Role: role, Database: pl.key.db, User: pl.key.user,
				Size: pl.size, Active: a, Idle: i, Waiting: w})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Addr != out[j].Addr {
			return out[i].Addr < out[j].Addr
		}
		return out[i].Role+out[i].Database+out[i].User < out[j].Role+out[j].Database+out[j].User
	})
	return out
}

// Clients lists connected clients.
func (p *Proxy) Clients() []ClientInfo {
	p.cmu.Lock()
	cs := make([]*client, 0, len(p.clients))
	for _, c := range p.clients {
		cs = append(cs, c)
	}
	p.cmu.Unlock()
	out := make([]ClientInfo, 0, len(cs))
	for _, c := range cs {
		ci := ClientInfo{Addr: c.addr, User: c.user, Database: c.db, Listener: "read-write", Mode: c.mode.String(),
			TLS: c.isTLS, Since: c.since.UTC().Format(time.RFC3339), State: c.stateName()}
		if c.ro {
			ci.Listener = "read-only"
		}
		if s := c.attached.Load(); s != nil && ci.State == "active" {
			ci.Server = s.pool.be.addr
			s.mu.Lock()
			ci.Awaiting, ci.TxStatus, ci.Pending, ci.Unsynced = s.outstanding, string(s.txStatus), len(s.pending), s.unsynced
			s.mu.Unlock()
		}
		out = append(out, ci)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Since+out[i].Addr < out[j].Since+out[j].Addr })
	return out
}

func (c *client) stateName() string {
	if c.state.Load() == stateWaiting {
		return "waiting"
	}
	if s := c.attached.Load(); s != nil {
		s.mu.Lock()
		mine := s.client == c
		s.mu.Unlock()
		if mine {
			return "active"
		}
	}
	return "idle"
}

func (p *Proxy) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(p.met.reg, promhttp.HandlerOpts{}))
	writeJSON := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /pools", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, p.Pools()) })
	mux.HandleFunc("GET /clients", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, p.Clients()) })
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, p.router.describe()) })
	mux.HandleFunc("POST /pause", func(w http.ResponseWriter, _ *http.Request) {
		p.Pause()
		p.log.Info("paused by operator: new transactions wait")
		writeJSON(w, p.router.describe())
	})
	mux.HandleFunc("POST /resume", func(w http.ResponseWriter, _ *http.Request) {
		p.Resume()
		p.log.Info("resumed by operator")
		writeJSON(w, p.router.describe())
	})
	return mux
}

// metricSet is the proxy's Prometheus metrics, in a private registry.
type metricSet struct {
	reg            *prometheus.Registry
	queueWait      prometheus.Histogram
	bytesIn        prometheus.Counter
	bytesOut       prometheus.Counter
	transactions   prometheus.Counter
	errors         *prometheus.CounterVec
	routingChanges prometheus.Counter
	storeUp        prometheus.Gauge
	paused         prometheus.Gauge
}

func newMetrics(p *Proxy) *metricSet {
	m := &metricSet{reg: prometheus.NewRegistry()}
	m.queueWait = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pgvigil_proxy_queue_wait_seconds",
		Help: "Time clients waited for a server connection.", Buckets: []float64{.0001, .0005, .001, .005, .01, .05, .1, .5, 1, 5, 30}})
	m.bytesIn = prometheus.NewCounter(prometheus.CounterOpts{Name: "pgvigil_proxy_client_bytes_total", Help: "Bytes received from clients."})
	m.bytesOut = prometheus.NewCounter(prometheus.CounterOpts{Name: "pgvigil_proxy_server_bytes_total", Help: "Bytes sent to clients from servers."})
	m.transactions = prometheus.NewCounter(prometheus.CounterOpts{Name: "pgvigil_proxy_transactions_total", Help: "Transactions completed (ReadyForQuery idle)."})
	m.errors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pgvigil_proxy_errors_total", Help: "Errors by kind."}, []string{"kind"})
	m.routingChanges = prometheus.NewCounter(prometheus.CounterOpts{Name: "pgvigil_proxy_routing_changes_total", Help: "Changes of primary, replica set or switchover state."})
	m.storeUp = prometheus.NewGauge(prometheus.GaugeOpts{Name: "pgvigil_proxy_store_reachable", Help: "1 when the last store read succeeded."})
	m.paused = prometheus.NewGauge(prometheus.GaugeOpts{Name: "pgvigil_proxy_paused", Help: "1 while paused by an operator."})
	for _, k := range []string{"auth", "protocol", "server_connect", "server_lost", "query_wait_timeout", "max_client_conn"} {
		m.errors.WithLabelValues(k)
	}
	clients := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pgvigil_proxy_clients", Help: "Client connections by state."}, []string{"state"})
	servers := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pgvigil_proxy_servers", Help: "Server connections by state."}, []string{"state"})
	m.reg.MustRegister(m.queueWait, m.bytesIn, m.bytesOut, m.transactions, m.errors, m.routingChanges, m.storeUp, m.paused,
		collectorFunc(func(ch chan<- prometheus.Metric) {
			counts := map[string]float64{"active": 0, "idle": 0, "waiting": 0}
			for _, c := range p.Clients() {
				counts[c.State]++
			}
			for k, v := range counts {
				clients.WithLabelValues(k).Set(v)
			}
			var act, idle float64
			for _, pl := range p.Pools() {
				act += float64(pl.Active)
				idle += float64(pl.Idle)
			}
			servers.WithLabelValues("active").Set(act)
			servers.WithLabelValues("idle").Set(idle)
			clients.Collect(ch)
			servers.Collect(ch)
		}, clients, servers))
	return m
}

// collectorFunc refreshes gauges from live state at scrape time.
type collectorFunc2 struct {
	fn    func(chan<- prometheus.Metric)
	descs []prometheus.Collector
}

func collectorFunc(fn func(chan<- prometheus.Metric), cs ...prometheus.Collector) prometheus.Collector {
	return &collectorFunc2{fn: fn, descs: cs}
}

func (c *collectorFunc2) Describe(ch chan<- *prometheus.Desc) {
	for _, x := range c.descs {
		x.Describe(ch)
	}
}

func (c *collectorFunc2) Collect(ch chan<- prometheus.Metric) { c.fn(ch) }

// OpenStore connects to the store the configuration names, as a read-only observer.
func OpenStore(cfg *config.Proxy, log *slog.Logger) (dcs.Store, error) {
	var tc *tls.Config
	if cfg.Etcd.Protocol == "https" {
		var err error
		if tc, err = config.EtcdClientTLS(cfg.Etcd.CACert, cfg.Etcd.Cert, cfg.Etcd.Key); err != nil {
			return nil, fmt.Errorf("etcd3: %w", err)
		}
	}
	host, _ := os.Hostname()
	log = slog.New(redact.New(cfg.Secrets()...).Handler(log.Handler()))
	return etcd.New(etcd.Config{Endpoints: cfg.Etcd.Hosts, TLS: tc, Username: cfg.Etcd.Username, Password: cfg.Etcd.Password,
		Namespace: cfg.Namespace, Scope: cfg.Scope, Name: fmt.Sprintf("proxy-%s-%d", host, os.Getpid()),
		RetryTimeout: 3 * time.Second, Logger: log})
}
