package api

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/pgvigil/pgvigil/internal/agent"
	"github.com/pgvigil/pgvigil/internal/cluster"
	"github.com/pgvigil/pgvigil/internal/postgres"
)

// node is what a health check looks at.
type node struct {
	name string
	snap agent.Snapshot
	live postgres.Status
	tags cluster.Tags
	now  time.Time
}

// primary: holds the leader key and runs read-write (pgvigil has no standby clusters yet, so a
// leader is always a primary and /standby-leader is never 200).
func (n node) primary() bool { return n.snap.Held && n.live.Ready && !n.live.InRecovery }

func (n node) replica() bool {
	return n.live.Ready && n.live.InRecovery && !n.snap.Held && !n.tags.NoLoadBalance
}

// syncStandby: listed in the sync key (the leader writes it while synchronous_mode is on).
func (n node) syncStandby() bool { return n.snap.View.IsSyncStandby(n.name) }

// check is a parsed health-check request.
type check struct {
	lag      int64 // -1: no limit
	state    string
	tags     map[string]string
	mode     string
	lagGiven bool
}

// parseCheck reads the query parameters Patroni's checks accept.
func parseCheck(r *http.Request) (check, error) {
	c := check{lag: -1, tags: map[string]string{}}
	q := r.URL.Query()
	if v := q.Get("lag"); v != "" {
		n, err := ParseBytes(v)
		if err != nil {
			return c, fmt.Errorf("lag: %w", err)
		}
		c.lag, c.lagGiven = n, true
	}
	c.state = q.Get("replication_state")
	c.mode = q.Get("mode")
	if c.mode != "" && c.mode != "apply" && c.mode != "write" {
		return c, fmt.Errorf("mode: must be apply or write, got %q", c.mode)
	}
	for k, vs := range q {
		if name, ok := strings.CutPrefix(k, "tag_"); ok && len(vs) > 0 {
			c.tags[name] = vs[0]
		}
	}
	return c, nil
}

// byteUnits are PostgreSQL's size units (base 1024), longest suffix first.
var byteUnits = []struct {
	suffix string
	mult   int64
}{{"TB", 1 << 40}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"kB", 1 << 10}, {"B", 1}}

// ParseBytes reads a size in bytes, with PostgreSQL's units (kB, MB, GB, TB; base 1024).
func ParseBytes(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range byteUnits {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(v), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size in bytes (e.g. 1048576, 16MB)", s)
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n * mult, nil
}

// lagOK compares the leader's last position in the store with this replica's replayed
// position, as Patroni does.
func (c check) lagOK(n node) bool {
	if c.lag < 0 || n.snap.View == nil {
		return true
	}
	return n.snap.View.Status.Optime-n.live.ReplayLSN <= c.lag
}

// tagsOK: every tag_<key>=<value> must match; built-in tags that are false count as absent.
func (c check) tagsOK(n node) bool {
	have := tagStrings(n.tags)
	for k, v := range c.tags {
		if got, ok := have[k]; !ok || got != strings.ToLower(v) {
			return false
		}
	}
	return true
}

func tagStrings(t cluster.Tags) map[string]string {
	m := map[string]string{}
	for k, v := range t.Extra {
		m[k] = strings.ToLower(fmt.Sprint(v))
	}
	set := func(k string, on bool) {
		if on {
			m[k] = "true"
		}
	}
	set("nofailover", t.NoFailover)
	set("noloadbalance", t.NoLoadBalance)
	set("clonefrom", t.CloneFrom)
	set("nosync", t.NoSync)
	if !t.NoFailover {
		m["failover_priority"] = strconv.Itoa(t.FailoverPriority)
	}
	return m
}

func (c check) replicaOK(n node) bool {
	if !n.replica() || !c.lagOK(n) || !c.tagsOK(n) {
		return false
	}
	return c.state == "" || c.state == n.live.ReplicationState
}

// healthy answers one health path; false for a path that is not a health check.
func healthy(path string, c check, n node) bool {
	switch path {
	case "", "primary", "master", "read-write":
		return n.primary()
	case "leader":
		return n.snap.Held && n.live.Ready
	case "standby-leader", "standby_leader":
		return false
	case "replica":
		return c.replicaOK(n)
	case "read-only":
		return n.primary() || c.replicaOK(n)
	case "synchronous", "sync":
		return c.replicaOK(n) && n.syncStandby()
	case "asynchronous", "async":
		return c.replicaOK(n) && !n.syncStandby()
	case "read-only-sync", "read-only-synchronous":
		return n.primary() || (c.replicaOK(n) && n.syncStandby())
	case "quorum", "read-only-quorum":
		return false // quorum commit is not implemented: no member is a quorum standby
	case "health":
		return n.live.Ready
	case "liveness":
		return n.alive()
	case "readiness":
		return c.ready(n)
	}
	return false
}

// alive: the HA loop ran within ttl (primary) or 2×ttl (replica); always while paused.
func (n node) alive() bool {
	if n.snap.At.IsZero() {
		return false
	}
	if n.snap.Config.Pause {
		return true
	}
	limit := n.snap.Config.TTLDuration()
	if !n.snap.Held {
		limit *= 2
	}
	return n.now.Sub(n.snap.At) < limit
}

// ready: the leader, or a streaming replica within ?lag= (default maximum_lag_on_failover),
// measured on the replayed (mode=apply, default) or received (mode=write) position.
func (c check) ready(n node) bool {
	if n.snap.Held && n.live.Ready {
		return true
	}
	if !n.live.Ready || !n.live.InRecovery || n.live.ReplicationState != "streaming" || n.snap.View == nil {
		return false
	}
	limit := n.snap.Config.MaximumLagOnFailover
	if c.lagGiven {
		limit = c.lag
	}
	pos := n.live.ReplayLSN
	if c.mode == "write" {
		pos = n.live.ReceiveLSN
	}
	return n.snap.View.Status.Optime-pos <= limit
}

// handleHealth answers the load-balancer and probe checks: the status code is the answer.
// GET carries the status document; HEAD, OPTIONS, /liveness and /readiness answer status only.
func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	c, err := parseCheck(r)
	if err != nil {
		textError(w, http.StatusBadRequest, err.Error())
		return
	}
	snap, live := s.observe(r.Context())
	n := node{name: s.o.Name, snap: snap, live: live, tags: s.o.Tags, now: time.Now()}
	path := strings.Trim(r.URL.Path, "/")
	// An unknown GET path answers 503 with the status document, as Patroni does.
	ok := healthy(path, c, n)
	code := http.StatusServiceUnavailable
	if ok {
		code = http.StatusOK
	}
	if r.Method != http.MethodGet || path == "liveness" || path == "readiness" {
		w.WriteHeader(code)
		return
	}
	writeJSON(w, code, s.status(snap, live))
}
