package proxy

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgvigil/pgvigil/internal/cluster"
	"github.com/pgvigil/pgvigil/internal/dcs"
)

// router holds where new transactions go. Clients wait on it while there is nowhere to go
// (switchover, failover, pause); every change closes the current changed channel.
type router struct {
	mu       sync.Mutex
	primary  *backend // read-write target; nil when none is confirmed
	draining bool     // planned switchover: hold new read-write transactions
	paused   bool     // operator PAUSE
	replicas []*backend
	fallback *backend // read-only pool on the primary, when read_only.fallback_to_primary
	reason   string
	changed  chan struct{}
	balance  string
	rr       atomic.Uint64
}

func newRouter(balance string) *router {
	return &router{changed: make(chan struct{}), balance: balance, reason: "waiting for the first topology read"}
}

// update changes the state under the lock and wakes every waiting client.
func (r *router) update(fn func()) {
	r.mu.Lock()
	fn()
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

// pickUntil returns the backend for a new transaction, waiting until there is one, ctx ends or
// timeout fires. The channel closes at the next routing change.
func (r *router) pickUntil(ctx context.Context, ro bool, timeout <-chan time.Time) (*backend, <-chan struct{}, error) {
	for {
		r.mu.Lock()
		ch := r.changed
		be := r.choose(ro)
		r.mu.Unlock()
		if be != nil {
			return be, ch, nil
		}
		select {
		case <-ch:
		case <-timeout:
			return nil, nil, context.DeadlineExceeded
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
}

// changes returns the channel closed at the next routing change.
func (r *router) changes() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

// ready returns the backend for a new transaction if there is one now.
func (r *router) ready(ro bool) *backend {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.choose(ro)
}

// choose applies the routing state; r.mu held.
func (r *router) choose(ro bool) *backend {
	if r.paused {
		return nil
	}
	if ro {
		if be := r.pickReplica(); be != nil {
			return be
		}
		if !r.draining {
			return r.fallback
		}
		return nil
	}
	if r.draining {
		return nil
	}
	return r.primary
}

// pickReplica chooses among eligible replicas; r.mu held.
func (r *router) pickReplica() *backend {
	n := len(r.replicas)
	if n == 0 {
		return nil
	}
	if r.balance == "least-connections" {
		best, bestN := r.replicas[0], -1
		for _, b := range r.replicas {
			if k := b.activeCount(); bestN < 0 || k < bestN {
				best, bestN = b, k
			}
		}
		return best
	}
	return r.replicas[r.rr.Add(1)%uint64(n)]
}

// why explains, for an error message, why no backend was found.
func (r *router) why(ro bool) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.paused:
		return "the proxy is paused"
	case r.draining:
		return "a switchover is in progress"
	case ro && len(r.replicas) == 0:
		return "no replica is eligible for read-only traffic"
	case r.primary == nil:
		return "there is no confirmed primary: " + r.reason
	}
	return "no server connection could be opened"
}

func (b *backend) activeCount() int {
	b.mu.Lock()
	pools := make([]*pool, 0, len(b.pools))
	for _, pl := range b.pools {
		pools = append(pools, pl)
	}
	b.mu.Unlock()
	n := 0
	for _, pl := range pools {
		a, _, _, _ := pl.counts()
		n += a
	}
	return n
}

// backendFor returns the live backend for an address and role, creating it on first use.
func (p *Proxy) backendFor(addr, member string, ro bool) *backend {
	p.bmu.Lock()
	defer p.bmu.Unlock()
	k := backendKey{addr, ro}
	if b := p.backends[k]; b != nil {
		return b
	}
	b := &backend{p: p, addr: addr, member: member, ro: ro, pools: map[poolKey]*pool{}}
	p.backends[k] = b
	return b
}

// retireBackend closes a backend's connections and forgets it.
func (p *Proxy) retireBackend(b *backend) {
	if b == nil {
		return
	}
	p.bmu.Lock()
	if p.backends[backendKey{b.addr, b.ro}] == b {
		delete(p.backends, backendKey{b.addr, b.ro})
	}
	p.bmu.Unlock()
	b.retire()
}

type backendKey struct {
	addr string
	ro   bool
}

// topology follows the cluster in the store and steers the router.
type topology struct {
	p     *Proxy
	store dcs.Store

	// Owned by the run goroutine.
	current     *backend // the confirmed primary's read-write backend
	currentName string
	currentAPI  string
	planned     bool // a planned switchover is under way
	drainStart  time.Time
	drainEnded  bool
	outage      bool
	// apiProblem is the last REST API failure logged, so that a check retried every 100 ms
	// (a TLS misconfiguration, say) is reported once, not on every try.
	apiProblem string
}

// run reads the cluster at start, then again on every watch event (leader or failover key)
// and every member_refresh for replica state; during a store outage or while a new leader is
// being confirmed it re-checks every few hundred milliseconds.
func (t *topology) run(ctx context.Context) {
	watch := t.store.Watch(ctx)
	refresh := time.NewTicker(t.p.cfg.MemberRefresh.D())
	defer refresh.Stop()
	soon := time.NewTimer(time.Hour)
	defer soon.Stop()
	for {
		again := t.refresh(ctx)
		if again > 0 {
			soon.Reset(again)
		}
		select {
		case <-ctx.Done():
			return
		case _, ok := <-watch:
			if !ok {
				return
			}
		case <-refresh.C:
		case <-soon.C:
		}
	}
}

// refresh reads the store once and applies it; it returns how soon to look again (0: at the
// next event).
func (t *topology) refresh(ctx context.Context) time.Duration {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	view, err := t.store.Get(rctx)
	cancel()
	p := t.p
	if err != nil {
		p.met.storeUp.Set(0)
		if !t.outage {
			t.outage = true
			p.log.Warn("store unreachable; keeping the last known primary while its REST API confirms it", "primary", t.currentName, "err", err)
		}
		if t.current != nil && !t.isPrimary(ctx, t.currentAPI) {
			p.log.Warn("the last known primary no longer says it is primary; routing stops", "primary", t.currentName)
			t.dropPrimary("store unreachable and " + t.currentName + "'s REST API does not confirm it as primary")
		}
		return time.Second
	}
	p.met.storeUp.Set(1)
	if t.outage {
		t.outage = false
		p.log.Info("store reachable again")
	}
	return t.apply(ctx, view)
}

// apply turns a cluster view into routing.
func (t *topology) apply(ctx context.Context, v *cluster.View) time.Duration {
	p := t.p
	now := time.Now()
	t.setReplicas(v)
	planned := v.Failover != nil && !v.Failover.Empty() && v.Failover.Due(now)
	leader := ""
	if v.Leader != nil {
		leader = v.Leader.Name
	}
	switch {
	case leader != "" && leader == t.currentName:
		if planned {
			if !t.planned {
				t.startDrain(leader)
			}
			return t.checkDrain()
		}
		if t.planned {
			p.log.Info("switchover request gone with the leader unchanged; resuming", "primary", leader)
			t.planned = false
			p.router.update(func() { p.router.draining = false })
		}
		return 0
	case leader == "":
		if planned || t.planned {
			if !t.planned {
				t.startDrain(t.currentName)
			}
			return t.checkDrain()
		}
		if t.current != nil {
			p.log.Warn("leader key gone without a switchover request: unplanned failover; closing connections to the old primary", "primary", t.currentName)
			t.dropPrimary("the leader key is gone (failover in progress)")
		}
		return 0
	}
	// A new leader: route to it once its REST API says it is primary (promotion done).
	m, ok := v.Member(leader)
	if !ok {
		return 200 * time.Millisecond
	}
	api := apiBase(m.APIURL)
	host, port := m.HostPort()
	if host == "" || port == 0 {
		p.log.Warn("leader has no usable conn_url", "member", leader, "conn_url", m.ConnURL)
		return time.Second
	}
	if t.current != nil && !t.planned {
		// Someone else holds the key while we route to another member: that one was demoted.
		p.log.Warn("leader changed without a switchover; closing connections to the old primary", "old", t.currentName, "new", leader)
		t.dropPrimary("leader changed to " + leader + ", waiting for its promotion")
	}
	if t.planned && !t.drainEnded {
		t.checkDrain()
	}
	if !t.isPrimary(ctx, api) {
		return 100 * time.Millisecond
	}
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	old := t.current
	be := p.backendFor(addr, leader, false)
	fb := p.backendFor(addr, leader, true)
	t.current, t.currentName, t.currentAPI, t.planned, t.drainEnded = be, leader, api, false, false
	p.router.update(func() {
		p.router.primary, p.router.draining, p.router.reason = be, false, ""
		if p.cfg.ReadOnly.FallbackToPrimary {
			p.router.fallback = fb
		}
	})
	p.met.routingChanges.Inc()
	p.log.Info("routing read-write traffic to the new primary", "primary", leader, "addr", addr)
	if old != nil && old != be {
		p.retireBackend(old)
	}
	return 0
}

func (t *topology) startDrain(name string) {
	p := t.p
	t.planned, t.drainStart, t.drainEnded = true, time.Now(), false
	p.log.Info("switchover started: holding new transactions, letting running ones finish", "primary", name,
		"drain_timeout", p.cfg.SwitchoverDrainTimeout.D())
	p.met.routingChanges.Inc()
	p.router.update(func() { p.router.draining = true })
}

// checkDrain closes what still runs on the old primary once the drain timeout has passed.
func (t *topology) checkDrain() time.Duration {
	left := t.p.cfg.SwitchoverDrainTimeout.D() - time.Since(t.drainStart)
	if left > 0 {
		return min(left, 200*time.Millisecond)
	}
	if !t.drainEnded && t.current != nil {
		t.drainEnded = true
		t.p.log.Warn("switchover drain timeout passed; closing transactions still running on the old primary", "primary", t.currentName)
		t.current.retire()
	}
	return 200 * time.Millisecond
}

// dropPrimary stops read-write routing and closes every connection to the old primary.
func (t *topology) dropPrimary(reason string) {
	p := t.p
	old := t.current
	t.current, t.currentName, t.currentAPI = nil, "", ""
	p.router.update(func() {
		p.router.primary, p.router.reason, p.router.fallback = nil, reason, nil
	})
	p.met.routingChanges.Inc()
	p.retireBackend(old)
}

// setReplicas picks the members fit for read-only traffic.
func (t *topology) setReplicas(v *cluster.View) {
	p := t.p
	var optime int64 = v.Status.Optime
	if lm, ok := v.LeaderMember(); ok && lm.XLogLocation != nil && *lm.XLogLocation > optime {
		optime = *lm.XLogLocation
	}
	var list []*backend
	leader := ""
	if v.Leader != nil {
		leader = v.Leader.Name
	}
	for _, m := range v.Members {
		if m.Name == leader || m.Role == cluster.RolePrimary || m.State != cluster.StateRunning || m.Tags.NoLoadBalance {
			continue
		}
		if m.ReplicationState != "streaming" {
			continue
		}
		if lag := p.cfg.ReadOnly.MaxLag; lag > 0 {
			pos := int64(-1)
			for _, x := range []*int64{m.ReplayLSN, m.ReceiveLSN, m.XLogLocation} {
				if x != nil {
					pos = *x
					break
				}
			}
			if pos < 0 || optime-pos > lag {
				continue
			}
		}
		host, port := m.HostPort()
		if host == "" || port == 0 {
			continue
		}
		list = append(list, p.backendFor(net.JoinHostPort(host, strconv.Itoa(port)), m.Name, true))
	}
	p.router.mu.Lock()
	old := p.router.replicas
	fallback := p.router.fallback
	same := len(old) == len(list)
	for i := range list {
		if same && old[i] != list[i] {
			same = false
		}
	}
	p.router.mu.Unlock()
	if same {
		return
	}
	p.router.update(func() { p.router.replicas = list })
	p.met.routingChanges.Inc()
	names := make([]string, len(list))
	for i, b := range list {
		names[i] = b.member
	}
	p.log.Info("read-only pool changed", "replicas", strings.Join(names, ","))
	// Replicas that left the set (promoted, lagging, stopped) lose their read-only connections.
	for _, b := range old {
		keep := false
		for _, n := range list {
			keep = keep || n == b
		}
		if !keep && b != fallback {
			p.retireBackend(b)
		}
	}
}

// isPrimary asks a member's REST API whether it runs as the primary.
func (t *topology) isPrimary(ctx context.Context, api string) bool {
	if api == "" {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, api+"/primary", nil)
	if err != nil {
		t.apiFailed(slog.LevelWarn, api, err.Error())
		return false
	}
	resp, err := t.p.rest.Load().Do(req)
	if err != nil {
		t.apiFailed(slog.LevelWarn, api, err.Error())
		return false
	}
	_ = resp.Body.Close() // only the status matters; the body is empty or ignored
	if resp.StatusCode != http.StatusOK {
		// Expected while a new leader is still being promoted.
		t.apiFailed(slog.LevelInfo, api, "GET /primary answered "+resp.Status)
		return false
	}
	t.apiProblem = ""
	return true
}

// apiFailed logs a REST API failure unless it is the one logged last.
func (t *topology) apiFailed(level slog.Level, api, problem string) {
	if problem == t.apiProblem {
		return
	}
	t.apiProblem = problem
	t.p.log.Log(context.Background(), level, "REST API does not confirm the member as primary", "api", api, "err", problem)
}

// apiBase turns a member's api_url (…/patroni) into the base URL of its REST API.
func apiBase(u string) string {
	return strings.TrimSuffix(strings.TrimSuffix(u, "/"), "/patroni")
}

// describe is the routing state for the status endpoint.
func (r *router) describe() map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]any{"paused": r.paused, "switchover_in_progress": r.draining}
	if r.primary != nil {
		out["primary"] = map[string]string{"member": r.primary.member, "addr": r.primary.addr}
	} else {
		out["primary"] = nil
		out["reason"] = r.reason
	}
	reps := []map[string]string{}
	for _, b := range r.replicas {
		reps = append(reps, map[string]string{"member": b.member, "addr": b.addr})
	}
	out["replicas"] = reps
	return out
}
