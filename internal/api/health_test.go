package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/pgvigil/pgvigil/internal/agent"
	"github.com/pgvigil/pgvigil/internal/cluster"
	"github.com/pgvigil/pgvigil/internal/ha"
	"github.com/pgvigil/pgvigil/internal/postgres"
)

// fixed is a Source that always shows the same node.
type fixed struct {
	snap agent.Snapshot
	live postgres.Status
}

func (f fixed) Snapshot() agent.Snapshot             { return f.snap }
func (f fixed) Live(context.Context) postgres.Status { return f.live }

const leaderOptime = 100 << 20

func view(sync string) *cluster.View {
	v := &cluster.View{Leader: &cluster.Leader{Name: "node1"}, Status: cluster.Status{Optime: leaderOptime},
		Config: cluster.DefaultDynamicConfig(), HasConfig: true}
	if sync != "" {
		v.Sync = &cluster.Sync{Leader: "node1", SyncStandby: sync}
	}
	return v
}

// The members the table asks about.
func leaderNode() (string, cluster.Tags, fixed) {
	return "node1", cluster.Tags{FailoverPriority: 1}, fixed{
		snap: agent.Snapshot{At: time.Now(), View: view(""), Held: true, Config: cluster.DefaultDynamicConfig()},
		live: postgres.Status{PGState: ha.PGState{DataDir: ha.DataValid, Running: true, Ready: true, Position: leaderOptime}},
	}
}

func replicaNode(name string, replayed int64, tags cluster.Tags, sync string) (string, cluster.Tags, fixed) {
	return name, tags, fixed{
		snap: agent.Snapshot{At: time.Now(), View: view(sync), Config: cluster.DefaultDynamicConfig()},
		live: postgres.Status{PGState: ha.PGState{DataDir: ha.DataValid, Running: true, Ready: true, InRecovery: true, Position: replayed},
			ReceiveLSN: replayed, ReplayLSN: replayed, ReplicationState: "streaming"},
	}
}

func stoppedNode() (string, cluster.Tags, fixed) {
	return "node4", cluster.Tags{FailoverPriority: 1}, fixed{
		snap: agent.Snapshot{At: time.Now(), View: view(""), Config: cluster.DefaultDynamicConfig()},
		live: postgres.Status{PGState: ha.PGState{DataDir: ha.DataValid}},
	}
}

// TestHealthChecks asks every health path of every kind of member, as Patroni's table does.
func TestHealthChecks(t *testing.T) {
	p1 := cluster.Tags{FailoverPriority: 1}
	nodes := map[string]func() (string, cluster.Tags, fixed){
		"leader":  leaderNode,
		"replica": func() (string, cluster.Tags, fixed) { return replicaNode("node2", leaderOptime, p1, "") },
		"noloadbal": func() (string, cluster.Tags, fixed) {
			return replicaNode("node2", leaderOptime, cluster.Tags{FailoverPriority: 1, NoLoadBalance: true}, "")
		},
		"lagging": func() (string, cluster.Tags, fixed) { return replicaNode("node2", leaderOptime-(32<<20), p1, "") },
		"stopped": stoppedNode,
		"sync":    func() (string, cluster.Tags, fixed) { return replicaNode("node3", leaderOptime, p1, "node3") },
	}
	//                                     leader replica noloadbal lagging stopped sync
	table := []struct {
		path  string
		codes [6]int
	}{
		{"/", [6]int{200, 503, 503, 503, 503, 503}},
		{"/primary", [6]int{200, 503, 503, 503, 503, 503}},
		{"/master", [6]int{200, 503, 503, 503, 503, 503}},
		{"/read-write", [6]int{200, 503, 503, 503, 503, 503}},
		{"/leader", [6]int{200, 503, 503, 503, 503, 503}},
		{"/standby-leader", [6]int{503, 503, 503, 503, 503, 503}},
		{"/replica", [6]int{503, 200, 503, 200, 503, 200}},
		{"/replica?lag=16MB", [6]int{503, 200, 503, 503, 503, 200}},
		{"/replica?lag=1073741824", [6]int{503, 200, 503, 200, 503, 200}},
		{"/replica?replication_state=streaming", [6]int{503, 200, 503, 200, 503, 200}},
		{"/replica?tag_nofailover=true", [6]int{503, 503, 503, 503, 503, 503}},
		{"/replica?tag_failover_priority=1", [6]int{503, 200, 503, 200, 503, 200}},
		{"/read-only", [6]int{200, 200, 503, 200, 503, 200}},
		{"/read-only?lag=16MB", [6]int{200, 200, 503, 503, 503, 200}},
		{"/sync", [6]int{503, 503, 503, 503, 503, 200}},
		{"/synchronous", [6]int{503, 503, 503, 503, 503, 200}},
		{"/async", [6]int{503, 200, 503, 200, 503, 503}},
		{"/asynchronous", [6]int{503, 200, 503, 200, 503, 503}},
		{"/read-only-sync", [6]int{200, 503, 503, 503, 503, 200}},
		{"/quorum", [6]int{503, 503, 503, 503, 503, 503}},
		{"/health", [6]int{200, 200, 200, 200, 503, 200}},
		{"/liveness", [6]int{200, 200, 200, 200, 200, 200}},
		{"/readiness", [6]int{200, 200, 200, 503, 503, 200}},
		{"/readiness?lag=64MB", [6]int{200, 200, 200, 200, 503, 200}},
		{"/nosuchpath", [6]int{503, 503, 503, 503, 503, 503}},
	}
	order := []string{"leader", "replica", "noloadbal", "lagging", "stopped", "sync"}
	for _, row := range table {
		for i, kind := range order {
			name, tags, src := nodes[kind]()
			srv := New(Options{Source: src, Name: name, Scope: "s", Version: "0", Tags: tags})
			for _, method := range []string{http.MethodGet, http.MethodHead, http.MethodOptions} {
				rec := httptest.NewRecorder()
				srv.Handler().ServeHTTP(rec, httptest.NewRequest(method, row.path, nil))
				if rec.Code != row.codes[i] {
					t.Errorf("%s %s on %s = %d, want %d", method, row.path, kind, rec.Code, row.codes[i])
				}
				if method != http.MethodGet && rec.Body.Len() != 0 {
					t.Errorf("%s %s on %s carries a body", method, row.path, kind)
				}
			}
		}
	}
}

func TestHealthCheckBadParameters(t *testing.T) {
	_, tags, src := leaderNode()
	srv := New(Options{Source: src, Name: "node1", Scope: "s", Version: "0", Tags: tags})
	for _, path := range []string{"/replica?lag=lots", "/replica?lag=-5", "/readiness?mode=sideways"} {
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusBadRequest || rec.Body.Len() == 0 {
			t.Errorf("GET %s = %d %q, want 400 with a reason", path, rec.Code, rec.Body.String())
		}
	}
}

func TestLivenessAfterLoopStalls(t *testing.T) {
	_, tags, src := leaderNode()
	src.snap.At = time.Now().Add(-11 * time.Second) // ttl 10: a leader whose loop stalled
	srv := New(Options{Source: src, Name: "node1", Scope: "s", Version: "0", Tags: tags})
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/liveness", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("liveness of a stalled leader = %d, want 503", rec.Code)
	}
	_, rtags, rsrc := replicaNode("node2", leaderOptime, cluster.Tags{FailoverPriority: 1}, "")
	rsrc.snap.At = time.Now().Add(-11 * time.Second) // a replica gets 2×ttl
	srv = New(Options{Source: rsrc, Name: "node2", Scope: "s", Version: "0", Tags: rtags})
	rec = httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/liveness", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("liveness of a replica 11 s after its loop = %d, want 200", rec.Code)
	}
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "1048576": 1 << 20, "16MB": 16 << 20, "16 MB": 16 << 20, "1kB": 1024, "2GB": 2 << 30, "1TB": 1 << 40, "10B": 10} {
		if got, err := ParseBytes(in); err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MB", "-1", "1.5MB", "12XB"} {
		if _, err := ParseBytes(in); err == nil {
			t.Errorf("ParseBytes(%q) accepted", in)
		}
	}
}
