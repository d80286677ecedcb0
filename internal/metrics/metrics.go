// Package metrics serves a node's Prometheus metrics: Patroni's patroni_* set, read from the
// agent's last cycle at scrape time, and pgvigil_* figures about the HA loop and the store.
//
// Every sample carries the labels scope="<scope>" and name="<member>", as Patroni ≥ 3.2 does.
// The metrics live in a private registry; nothing is registered globally.
package metrics

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pgvigil/pgvigil/internal/agent"
	"github.com/pgvigil/pgvigil/internal/cluster"
	"github.com/pgvigil/pgvigil/internal/dcs"
)

// Source is what the collector reads at scrape time: the agent's last cycle.
type Source interface {
	Snapshot() agent.Snapshot
}

// Options configure a Collector.
type Options struct {
	Scope   string
	Name    string // the member name
	Version string // pgvigil's version, published as patroni_version (see EncodeVersion)
	// Source may be nil at construction (the agent needs the collector's hooks before it
	// exists); set it with SetSource before serving. Until then scrapes show an empty snapshot.
	Source Source
	// Now is the clock for lease arithmetic; time.Now when nil.
	Now func() time.Time
}

// Collector owns the node's registry. Create it with New; it is safe for concurrent use.
type Collector struct {
	o   Options
	src atomic.Pointer[sourceRef]
	reg *prometheus.Registry

	loop        prometheus.Histogram
	failovers   prometheus.Counter
	switchovers prometheus.Counter
	storeTime   *prometheus.HistogramVec
	storeErrs   *prometheus.CounterVec
}

type sourceRef struct{ s Source }

// Store operations, the values of the op label.
const (
	OpGet              = "get"
	OpTouchMember      = "touch_member"
	OpKeepAlive        = "keepalive"
	OpAcquireLeader    = "acquire_leader"
	OpRenewLeader      = "renew_leader"
	OpReleaseLeader    = "release_leader"
	OpDeleteMember     = "delete_member"
	OpCreateInitialize = "create_initialize"
	OpSetInitialize    = "set_initialize"
	OpDeleteInitialize = "delete_initialize"
	OpInitConfig       = "init_config"
	OpPutConfig        = "put_config"
	OpSetFailover      = "set_failover"
	OpSetSync          = "set_sync"
	OpSetHistory       = "set_history"
	OpSetStatus        = "set_status"
)

var storeOps = []string{OpGet, OpTouchMember, OpKeepAlive, OpAcquireLeader, OpRenewLeader, OpReleaseLeader,
	OpDeleteMember, OpCreateInitialize, OpSetInitialize, OpDeleteInitialize, OpInitConfig, OpPutConfig, OpSetFailover, OpSetSync, OpSetHistory, OpSetStatus}

// New builds the collector and its registry.
func New(o Options) *Collector {
	if o.Now == nil {
		o.Now = time.Now
	}
	c := &Collector{o: o, reg: prometheus.NewRegistry()}
	c.SetSource(o.Source)
	c.loop = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "pgvigil_ha_loop_duration_seconds",
		Help:    "Duration of one HA cycle: observe the store and PostgreSQL, decide, act.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	})
	c.failovers = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pgvigil_failovers_total",
		Help: "Promotions of this member that were not planned (the leader was lost).",
	})
	c.switchovers = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pgvigil_switchovers_total",
		Help: "Promotions of this member that were planned (switchover).",
	})
	c.storeTime = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "pgvigil_store_request_duration_seconds",
		Help:    "Duration of requests to the distributed configuration store, by operation.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"op"})
	c.storeErrs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pgvigil_store_errors_total",
		Help: "Failed requests to the distributed configuration store, by operation; answers such as key-exists, not-the-leader or changed-since-read are not failures.",
	}, []string{"op"})
	for _, op := range storeOps { // every series exists from the first scrape, so rate() works at once
		c.storeTime.WithLabelValues(op)
		c.storeErrs.WithLabelValues(op)
	}
	r := prometheus.WrapRegistererWith(prometheus.Labels{"scope": o.Scope, "name": o.Name}, c.reg)
	r.MustRegister(c.loop, c.failovers, c.switchovers, c.storeTime, c.storeErrs, snapshotCollector{c})
	return c
}

// SetSource sets (or replaces) what scrapes read.
func (c *Collector) SetSource(s Source) {
	if s == nil {
		c.src.Store(nil)
		return
	}
	c.src.Store(&sourceRef{s})
}

// Registry is the collector's private registry (for tests and for adding collectors).
func (c *Collector) Registry() *prometheus.Registry { return c.reg }

// Handler serves the registry in Prometheus text format.
func (c *Collector) Handler() http.Handler {
	return promhttp.HandlerFor(c.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Hooks feed the loop histogram and the promotion counters; pass them in agent.Options.
func (c *Collector) Hooks() agent.Hooks {
	return agent.Hooks{
		CycleDone: func(took time.Duration, _ string) { c.loop.Observe(took.Seconds()) },
		Promoted: func(planned bool) {
			if planned {
				c.switchovers.Inc()
			} else {
				c.failovers.Inc()
			}
		},
	}
}

func (c *Collector) snapshot() agent.Snapshot {
	if r := c.src.Load(); r != nil && r.s != nil {
		return r.s.Snapshot()
	}
	return agent.Snapshot{}
}

// EncodeVersion turns a version into Patroni's patroni_version value: the first three
// dot-separated parts, each zero-padded to two digits (3.0.2 → 030002 → 30002). A leading "v"
// is ignored, each part counts only its leading digits ("0-dev" → 0), and a part without
// digits counts as 0.
func EncodeVersion(v string) float64 {
	parts := strings.SplitN(strings.TrimPrefix(strings.TrimSpace(v), "v"), ".", 4)
	n := 0
	for i := range 3 {
		d := 0
		if i < len(parts) {
			p := parts[i]
			end := 0
			for end < len(p) && p[end] >= '0' && p[end] <= '9' {
				end++
			}
			if x, err := strconv.Atoi(p[:end]); err == nil {
				d = min(x, 99)
			}
		}
		n = n*100 + d
	}
	return float64(n)
}

// postgresStates is Patroni's state list, in order: patroni_postgres_state is the index.
var postgresStates = []string{"initializing new cluster", "initdb failed", "running custom bootstrap script",
	"custom bootstrap failed", "creating replica", "running", "starting", "starting after custom bootstrap",
	"start failed", "restarting", "restart failed", "stopping", "stopped", "stop failed", "crashed"}

type gaugeDef struct {
	name, help string
	counter    bool
	value      func(c *Collector, s agent.Snapshot) float64
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func epoch(t time.Time) float64 {
	if t.IsZero() || t.Unix() <= 0 {
		return 0
	}
	return float64(t.Unix()) + float64(t.Nanosecond())/1e9
}

// patroniMetrics are Patroni 4's /metrics set (without patroni_master, dropped in 4.0), with
// the types of 4.1.4 (timeline is a gauge; WAL locations are counters).
var patroniMetrics = []gaugeDef{
	{name: "patroni_version", help: "Version of the HA manager, each of its three parts zero-padded to two digits.",
		value: func(c *Collector, _ agent.Snapshot) float64 { return EncodeVersion(c.o.Version) }},
	{name: "patroni_postgres_running", help: "1 if PostgreSQL is running (accepting connections), else 0.",
		value: func(_ *Collector, s agent.Snapshot) float64 {
			return b2f(agent.State(s.Local, s.Busy, false) == cluster.StateRunning)
		}},
	{name: "patroni_postmaster_start_time", help: "Start time of the postmaster in epoch seconds, 0 if unknown.",
		value: func(_ *Collector, s agent.Snapshot) float64 { return ready(s, epoch(s.Local.StartTime)) }},
	{name: "patroni_primary", help: "1 if PostgreSQL runs as the primary, else 0.",
		value: func(_ *Collector, s agent.Snapshot) float64 { return b2f(agent.Role(s.Local) == cluster.RolePrimary) }},
	{name: "patroni_xlog_location", help: "Current WAL location of the primary in bytes, 0 on other members.", counter: true,
		value: func(_ *Collector, s agent.Snapshot) float64 {
			return ready(s, b2f(!s.Local.InRecovery)*float64(s.Local.Position))
		}},
	{name: "patroni_standby_leader", help: "1 if this member is the leader of a standby cluster, else 0 (not supported: always 0).",
		value: func(*Collector, agent.Snapshot) float64 { return 0 }},
	{name: "patroni_replica", help: "1 if PostgreSQL runs as a replica, else 0.",
		value: func(_ *Collector, s agent.Snapshot) float64 { return b2f(agent.Role(s.Local) == cluster.RoleReplica) }},
	{name: "patroni_sync_standby", help: "1 if this member is a synchronous standby, else 0 (synchronous replication is not implemented: always 0).",
		value: func(*Collector, agent.Snapshot) float64 { return 0 }},
	{name: "patroni_quorum_standby", help: "1 if this member is a quorum standby, else 0 (not implemented: always 0).",
		value: func(*Collector, agent.Snapshot) float64 { return 0 }},
	{name: "patroni_xlog_received_location", help: "WAL location received by a replica in bytes, 0 on other members.", counter: true,
		value: func(_ *Collector, s agent.Snapshot) float64 {
			return ready(s, b2f(s.Local.InRecovery)*float64(s.Local.ReceiveLSN))
		}},
	{name: "patroni_xlog_replayed_location", help: "WAL location replayed by a replica in bytes, 0 on other members.", counter: true,
		value: func(_ *Collector, s agent.Snapshot) float64 {
			return ready(s, b2f(s.Local.InRecovery)*float64(s.Local.ReplayLSN))
		}},
	{name: "patroni_xlog_replayed_timestamp", help: "Commit time of the last transaction a replica replayed, epoch seconds, 0 if none.",
		value: func(_ *Collector, s agent.Snapshot) float64 {
			return ready(s, b2f(s.Local.InRecovery)*epoch(s.Local.ReplayedAt))
		}},
	{name: "patroni_xlog_paused", help: "1 if WAL replay is paused on this replica, else 0.",
		value: func(_ *Collector, s agent.Snapshot) float64 {
			return ready(s, b2f(s.Local.InRecovery && s.Local.ReplayPaused))
		}},
	{name: "patroni_postgres_streaming", help: "1 if this replica streams WAL from another member, else 0.",
		value: func(_ *Collector, s agent.Snapshot) float64 {
			return ready(s, b2f(s.Local.InRecovery && s.Local.ReplicationState == "streaming"))
		}},
	{name: "patroni_postgres_in_archive_recovery", help: "1 if this replica replays WAL from the archive (not streaming), else 0.",
		value: func(_ *Collector, s agent.Snapshot) float64 {
			return ready(s, b2f(s.Local.InRecovery && s.Local.ReplicationState == "in archive recovery"))
		}},
	{name: "patroni_postgres_server_version", help: "PostgreSQL's server_version_num if it is running, else 0.",
		value: func(_ *Collector, s agent.Snapshot) float64 { return ready(s, float64(s.Local.ServerVersion)) }},
	{name: "patroni_cluster_unlocked", help: "1 if no member holds the leader key, else 0.",
		value: func(_ *Collector, s agent.Snapshot) float64 { return b2f(s.View != nil && s.View.Leader == nil) }},
	{name: "patroni_failsafe_mode_is_active", help: "1 if this leader survives a store outage in failsafe mode, else 0.",
		value: func(_ *Collector, s agent.Snapshot) float64 { return b2f(s.FailsafeActive) }},
	{name: "patroni_postgres_timeline", help: "PostgreSQL's timeline if it is running, else 0.",
		value: func(_ *Collector, s agent.Snapshot) float64 { return ready(s, float64(s.Local.Timeline)) }},
	{name: "patroni_dcs_last_seen", help: "Epoch seconds of the last successful read of the store, 0 if never.",
		value: func(_ *Collector, s agent.Snapshot) float64 {
			if s.LastStoreOK.IsZero() {
				return 0
			}
			return float64(s.LastStoreOK.Unix())
		}},
	{name: "patroni_pending_restart", help: "1 if PostgreSQL has settings that need a restart, else 0.",
		value: func(_ *Collector, s agent.Snapshot) float64 { return ready(s, b2f(s.Local.PendingRestart)) }},
	{name: "patroni_is_paused", help: "1 if the cluster is paused (maintenance mode, no automatic failover), else 0.",
		value: func(_ *Collector, s agent.Snapshot) float64 { return b2f(s.Config.Pause) }},
	{name: "patroni_postgres_state", help: "Index of PostgreSQL's state in Patroni's state list, -1 if unknown. " +
		"Values: 0=initializing new cluster, 1=initdb failed, 2=running custom bootstrap script, 3=custom bootstrap failed, " +
		"4=creating replica, 5=running, 6=starting, 7=starting after custom bootstrap, 8=start failed, 9=restarting, " +
		"10=restart failed, 11=stopping, 12=stopped, 13=stop failed, 14=crashed.",
		value: func(_ *Collector, s agent.Snapshot) float64 {
			st := agent.State(s.Local, s.Busy, false)
			for i, x := range postgresStates {
				if x == st {
					return float64(i)
				}
			}
			return -1
		}},
	{name: "pgvigil_lease_remaining_seconds", help: "Seconds the leader key is guaranteed to live without another renewal, 0 when not held.",
		value: func(c *Collector, s agent.Snapshot) float64 { return c.leaseRemaining(s).Seconds() }},
}

// ready zeroes what is read through SQL when PostgreSQL did not answer in the last cycle.
func ready(s agent.Snapshot, v float64) float64 {
	if !s.Local.Ready {
		return 0
	}
	return v
}

func (c *Collector) leaseRemaining(s agent.Snapshot) time.Duration {
	if !s.Held || s.LastRenewed.IsZero() {
		return 0
	}
	ttl := s.Config.TTLDuration()
	if ttl <= 0 {
		ttl = 30 * time.Second // Patroni's default ttl
	}
	return max(0, ttl-c.o.Now().Sub(s.LastRenewed))
}

var (
	patroniDescs = func() []*prometheus.Desc {
		out := make([]*prometheus.Desc, len(patroniMetrics))
		for i, m := range patroniMetrics {
			out[i] = prometheus.NewDesc(m.name, m.help, nil, nil)
		}
		return out
	}()
	verdictDesc = prometheus.NewDesc("pgvigil_last_verdict_info",
		"The verdict of the last HA cycle, as the verdict label; the value is always 1.", []string{"verdict"}, nil)
)

// snapshotCollector reads one snapshot per scrape and emits the metrics derived from it.
type snapshotCollector struct{ c *Collector }

func (sc snapshotCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range patroniDescs {
		ch <- d
	}
	ch <- verdictDesc
}

func (sc snapshotCollector) Collect(ch chan<- prometheus.Metric) {
	s := sc.c.snapshot()
	for i, m := range patroniMetrics {
		t := prometheus.GaugeValue
		if m.counter {
			t = prometheus.CounterValue
		}
		ch <- prometheus.MustNewConstMetric(patroniDescs[i], t, m.value(sc.c, s))
	}
	if s.Verdict != "" {
		ch <- prometheus.MustNewConstMetric(verdictDesc, prometheus.GaugeValue, 1, s.Verdict)
	}
}

// InstrumentStore wraps s so that every request is timed and every failure counted by
// operation. Watch and Close pass through untouched. Answers the interface defines as
// outcomes (ErrExists, ErrNotLeader, ErrConflict) are timed but not counted as errors.
func (c *Collector) InstrumentStore(s dcs.Store) dcs.Store {
	return &store{Store: s, c: c}
}

// store decorates a dcs.Store. The embedded Store passes through any method added to the
// interface later until it gets its own instrumented wrapper here.
type store struct {
	dcs.Store
	c *Collector
}

func (s *store) observe(op string, start time.Time, err error) {
	s.c.storeTime.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil && !errors.Is(err, dcs.ErrExists) && !errors.Is(err, dcs.ErrNotLeader) && !errors.Is(err, dcs.ErrConflict) {
		s.c.storeErrs.WithLabelValues(op).Inc()
	}
}

func (s *store) do(op string, f func() error) error {
	start := time.Now()
	err := f()
	s.observe(op, start, err)
	return err
}

func (s *store) Get(ctx context.Context) (*cluster.View, error) {
	start := time.Now()
	v, err := s.Store.Get(ctx)
	s.observe(OpGet, start, err)
	return v, err
}

func (s *store) TouchMember(ctx context.Context, m cluster.Member) error {
	return s.do(OpTouchMember, func() error { return s.Store.TouchMember(ctx, m) })
}

func (s *store) KeepAlive(ctx context.Context) (bool, error) {
	start := time.Now()
	ok, err := s.Store.KeepAlive(ctx)
	s.observe(OpKeepAlive, start, err)
	return ok, err
}

func (s *store) AcquireLeader(ctx context.Context) error {
	return s.do(OpAcquireLeader, func() error { return s.Store.AcquireLeader(ctx) })
}

func (s *store) RenewLeader(ctx context.Context) error {
	return s.do(OpRenewLeader, func() error { return s.Store.RenewLeader(ctx) })
}

func (s *store) ReleaseLeader(ctx context.Context) error {
	return s.do(OpReleaseLeader, func() error { return s.Store.ReleaseLeader(ctx) })
}

func (s *store) DeleteMember(ctx context.Context) error {
	return s.do(OpDeleteMember, func() error { return s.Store.DeleteMember(ctx) })
}

func (s *store) CreateInitialize(ctx context.Context) error {
	return s.do(OpCreateInitialize, func() error { return s.Store.CreateInitialize(ctx) })
}

func (s *store) SetInitialize(ctx context.Context, sysid string) error {
	return s.do(OpSetInitialize, func() error { return s.Store.SetInitialize(ctx, sysid) })
}

func (s *store) DeleteInitialize(ctx context.Context) error {
	return s.do(OpDeleteInitialize, func() error { return s.Store.DeleteInitialize(ctx) })
}

func (s *store) InitConfig(ctx context.Context, cfg cluster.DynamicConfig) error {
	return s.do(OpInitConfig, func() error { return s.Store.InitConfig(ctx, cfg) })
}

func (s *store) PutConfig(ctx context.Context, raw []byte, rev int64) error {
	return s.do(OpPutConfig, func() error { return s.Store.PutConfig(ctx, raw, rev) })
}

func (s *store) SetFailover(ctx context.Context, f cluster.Failover) error {
	return s.do(OpSetFailover, func() error { return s.Store.SetFailover(ctx, f) })
}

func (s *store) SetSync(ctx context.Context, sy *cluster.Sync) error {
	return s.do(OpSetSync, func() error { return s.Store.SetSync(ctx, sy) })
}

func (s *store) SetHistory(ctx context.Context, h []cluster.HistoryEntry) error {
	return s.do(OpSetHistory, func() error { return s.Store.SetHistory(ctx, h) })
}

func (s *store) SetStatus(ctx context.Context, st cluster.Status) error {
	return s.do(OpSetStatus, func() error { return s.Store.SetStatus(ctx, st) })
}

func (s *store) Watch(ctx context.Context) <-chan struct{} { return s.Store.Watch(ctx) }

func (s *store) Close() error { return s.Store.Close() }
