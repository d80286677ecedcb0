package metrics

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pgvigil/pgvigil/internal/agent"
	"github.com/pgvigil/pgvigil/internal/cluster"
	"github.com/pgvigil/pgvigil/internal/dcs"
	"github.com/pgvigil/pgvigil/internal/ha"
	"github.com/pgvigil/pgvigil/internal/postgres"
)

type fakeSource struct{ snap agent.Snapshot }

func (f fakeSource) Snapshot() agent.Snapshot { return f.snap }

var now = time.Date(2026, 11, 21, 23, 20, 30, 0, time.UTC)

func leaderSnapshot() agent.Snapshot {
	local := postgres.Status{PGState: ha.PGState{DataDir: ha.DataValid, Running: true, Ready: true, Timeline: 3, Position: 67108960},
		StartTime: time.Date(2026, 11, 21, 23, 20, 28, 412255000, time.UTC), ServerVersion: 150018}
	return agent.Snapshot{At: now, Local: local, Held: true, Verdict: "no action: I am the leader with the lock",
		View:   &cluster.View{Leader: &cluster.Leader{Name: "node1"}},
		Config: cluster.DynamicConfig{TTL: 30, LoopWait: 10, RetryTimeout: 10}, LastStoreOK: now.Add(-time.Second),
		LastRenewed: now.Add(-4 * time.Second)}
}

func replicaSnapshot() agent.Snapshot {
	local := postgres.Status{PGState: ha.PGState{DataDir: ha.DataValid, Running: true, Ready: true, InRecovery: true, Timeline: 3,
		Position: 67109632}, ReceiveLSN: 67109632, ReplayLSN: 67109000, ReplicationState: "streaming",
		StartTime: time.Date(2026, 11, 21, 23, 20, 30, 0, time.UTC), ServerVersion: 150018,
		ReplayedAt: time.Date(2026, 11, 21, 23, 22, 22, 500000000, time.UTC)}
	return agent.Snapshot{At: now, Local: local, Verdict: "no action: I am a secondary and I am following a leader",
		View:   &cluster.View{Leader: &cluster.Leader{Name: "node1"}},
		Config: cluster.DynamicConfig{TTL: 30, LoopWait: 10, RetryTimeout: 10, Pause: true}, LastStoreOK: now}
}

func scrape(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics = %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	mf, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return mf
}

// sample returns the single sample of a family, checking the scope and name labels.
func sample(t *testing.T, mf map[string]*dto.MetricFamily, name string) (*dto.Metric, dto.MetricType) {
	t.Helper()
	f, ok := mf[name]
	if !ok {
		t.Fatalf("metric %s missing", name)
	}
	if len(f.Metric) != 1 {
		t.Fatalf("metric %s has %d samples, want 1", name, len(f.Metric))
	}
	m := f.Metric[0]
	labels := map[string]string{}
	for _, l := range m.Label {
		labels[l.GetName()] = l.GetValue()
	}
	if labels["scope"] != "bench" || labels["name"] != "node1" {
		t.Fatalf("metric %s labels %v, want scope=bench name=node1", name, labels)
	}
	return m, f.GetType()
}

func value(t *testing.T, mf map[string]*dto.MetricFamily, name string) float64 {
	t.Helper()
	m, typ := sample(t, mf, name)
	switch typ {
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue()
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	}
	t.Fatalf("metric %s has type %s", name, typ)
	return 0
}

var patroniNames = []string{"patroni_version", "patroni_postgres_running", "patroni_postmaster_start_time", "patroni_primary",
	"patroni_xlog_location", "patroni_standby_leader", "patroni_replica", "patroni_sync_standby", "patroni_quorum_standby",
	"patroni_xlog_received_location", "patroni_xlog_replayed_location", "patroni_xlog_replayed_timestamp",
	"patroni_xlog_paused", "patroni_postgres_server_version", "patroni_cluster_unlocked", "patroni_failsafe_mode_is_active",
	"patroni_postgres_timeline", "patroni_dcs_last_seen", "patroni_pending_restart", "patroni_is_paused",
	"patroni_postgres_streaming", "patroni_postgres_in_archive_recovery"}

func newCollector(snap agent.Snapshot) *Collector {
	return New(Options{Scope: "bench", Name: "node1", Version: "3.0.2", Source: fakeSource{snap}, Now: func() time.Time { return now }})
}

func TestLeaderMetrics(t *testing.T) {
	c := newCollector(leaderSnapshot())
	h := c.Hooks()
	h.CycleDone(20*time.Millisecond, "x")
	h.CycleDone(30*time.Millisecond, "x")
	h.Promoted(false)
	h.Promoted(true)
	h.Promoted(false)
	mf := scrape(t, c.Handler())
	for _, n := range patroniNames {
		sample(t, mf, n)
	}
	want := map[string]float64{
		"patroni_version": 30002, "patroni_postgres_running": 1, "patroni_postmaster_start_time": 1795303228.412255,
		"patroni_primary": 1, "patroni_replica": 0, "patroni_xlog_location": 67108960, "patroni_xlog_received_location": 0,
		"patroni_xlog_replayed_location": 0, "patroni_xlog_replayed_timestamp": 0, "patroni_postgres_timeline": 3,
		"patroni_postgres_server_version": 150018, "patroni_cluster_unlocked": 0, "patroni_sync_standby": 0,
		"patroni_dcs_last_seen": float64(now.Unix() - 1), "patroni_is_paused": 0, "patroni_postgres_streaming": 0,
		"patroni_postgres_state": 5, "pgvigil_lease_remaining_seconds": 26,
		"pgvigil_failovers_total": 2, "pgvigil_switchovers_total": 1,
	}
	for n, v := range want {
		if got := value(t, mf, n); math.Abs(got-v) > 1e-6 {
			t.Errorf("%s = %v, want %v", n, got, v)
		}
	}
	for n, typ := range map[string]dto.MetricType{"patroni_xlog_location": dto.MetricType_COUNTER,
		"patroni_postgres_timeline": dto.MetricType_GAUGE, "pgvigil_ha_loop_duration_seconds": dto.MetricType_HISTOGRAM,
		"pgvigil_failovers_total": dto.MetricType_COUNTER} {
		if got := mf[n].GetType(); got != typ {
			t.Errorf("%s has type %s, want %s", n, got, typ)
		}
	}
	loop, _ := sample(t, mf, "pgvigil_ha_loop_duration_seconds")
	if h := loop.GetHistogram(); h.GetSampleCount() != 2 || h.GetSampleSum() < 0.049 || h.GetSampleSum() > 0.051 {
		t.Errorf("loop histogram count %d sum %v, want 2 and 0.05", h.GetSampleCount(), h.GetSampleSum())
	}
	v, _ := sample(t, mf, "pgvigil_last_verdict_info")
	if v.GetGauge().GetValue() != 1 || labelValue(v, "verdict") != "no action: I am the leader with the lock" {
		t.Errorf("verdict info = %v", v)
	}
}

func TestReplicaMetrics(t *testing.T) {
	mf := scrape(t, newCollector(replicaSnapshot()).Handler())
	want := map[string]float64{
		"patroni_primary": 0, "patroni_replica": 1, "patroni_xlog_location": 0, "patroni_xlog_received_location": 67109632,
		"patroni_xlog_replayed_location": 67109000, "patroni_xlog_replayed_timestamp": 1795303342.5,
		"patroni_postgres_timeline": 3, "patroni_postgres_streaming": 1, "patroni_postgres_in_archive_recovery": 0,
		"patroni_is_paused": 1, "pgvigil_lease_remaining_seconds": 0, "pgvigil_failovers_total": 0,
	}
	for n, v := range want {
		if got := value(t, mf, n); math.Abs(got-v) > 1e-6 {
			t.Errorf("%s = %v, want %v", n, got, v)
		}
	}
}

func TestStoppedAndUnlocked(t *testing.T) {
	s := leaderSnapshot()
	s.Local = postgres.Status{PGState: ha.PGState{DataDir: ha.DataValid, Timeline: 3}}
	s.Held, s.View = false, &cluster.View{}
	mf := scrape(t, newCollector(s).Handler())
	for n, v := range map[string]float64{"patroni_postgres_running": 0, "patroni_primary": 0, "patroni_replica": 1,
		"patroni_postgres_timeline": 0, "patroni_cluster_unlocked": 1, "patroni_postmaster_start_time": 0,
		"patroni_postgres_state": 12, "pgvigil_lease_remaining_seconds": 0} {
		if got := value(t, mf, n); math.Abs(got-v) > 1e-6 {
			t.Errorf("%s = %v, want %v", n, got, v)
		}
	}
}

func TestNoSourceYet(t *testing.T) {
	c := New(Options{Scope: "bench", Name: "node1", Version: "0.1.0"})
	mf := scrape(t, c.Handler())
	if got := value(t, mf, "patroni_version"); got != 100 {
		t.Errorf("patroni_version = %v, want 100", got)
	}
	if _, ok := mf["pgvigil_last_verdict_info"]; ok {
		t.Error("a verdict before the first cycle")
	}
	c.SetSource(fakeSource{leaderSnapshot()})
	if got := value(t, scrape(t, c.Handler()), "patroni_primary"); got != 1 {
		t.Errorf("patroni_primary after SetSource = %v", got)
	}
}

func TestEncodeVersion(t *testing.T) {
	for v, want := range map[string]float64{"3.0.2": 30002, "0.1.0": 100, "0.1.0-dev": 100, "v1.12.3-4-gabcdef-dirty": 11203,
		"4.1": 40100, "abc1234": 0, "": 0, "10.x.7": 100007} {
		if got := EncodeVersion(v); got != want {
			t.Errorf("EncodeVersion(%q) = %v, want %v", v, got, want)
		}
	}
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.Label {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// fakeStore answers with a scripted error per operation; the embedded nil Store panics on any
// method the test did not mean to call.
type fakeStore struct {
	dcs.Store
	errs map[string]error
}

func (f *fakeStore) Get(context.Context) (*cluster.View, error) {
	return &cluster.View{}, f.errs[OpGet]
}
func (f *fakeStore) RenewLeader(context.Context) error       { return f.errs[OpRenewLeader] }
func (f *fakeStore) AcquireLeader(context.Context) error     { return f.errs[OpAcquireLeader] }
func (f *fakeStore) KeepAlive(context.Context) (bool, error) { return true, f.errs[OpKeepAlive] }

func TestInstrumentStore(t *testing.T) {
	c := New(Options{Scope: "bench", Name: "node1", Version: "0.1.0"})
	fake := &fakeStore{errs: map[string]error{
		OpGet:           fmt.Errorf("get: %w", dcs.ErrUnavailable),
		OpRenewLeader:   dcs.ErrNotLeader,
		OpAcquireLeader: dcs.ErrExists,
	}}
	s := c.InstrumentStore(fake)
	ctx := context.Background()
	for range 3 {
		if _, err := s.Get(ctx); !errors.Is(err, dcs.ErrUnavailable) {
			t.Fatalf("Get error %v not passed through", err)
		}
	}
	if err := s.RenewLeader(ctx); !errors.Is(err, dcs.ErrNotLeader) {
		t.Fatalf("RenewLeader error %v not passed through", err)
	}
	_ = s.AcquireLeader(ctx)
	if ok, err := s.KeepAlive(ctx); !ok || err != nil {
		t.Fatalf("KeepAlive = %v, %v", ok, err)
	}
	fake.errs[OpKeepAlive] = errors.New("boom")
	_, _ = s.KeepAlive(ctx)

	mf := scrape(t, c.Handler())
	errs := map[string]float64{}
	for _, m := range mf["pgvigil_store_errors_total"].GetMetric() {
		errs[labelValue(m, "op")] = m.GetCounter().GetValue()
	}
	for op, want := range map[string]float64{OpGet: 3, OpKeepAlive: 1, OpRenewLeader: 0, OpAcquireLeader: 0, OpTouchMember: 0} {
		if got, ok := errs[op]; !ok || got != want {
			t.Errorf("store errors for %s = %v (present %v), want %v", op, got, ok, want)
		}
	}
	counts := map[string]uint64{}
	for _, m := range mf["pgvigil_store_request_duration_seconds"].GetMetric() {
		counts[labelValue(m, "op")] = m.GetHistogram().GetSampleCount()
	}
	for op, want := range map[string]uint64{OpGet: 3, OpKeepAlive: 2, OpRenewLeader: 1, OpAcquireLeader: 1, OpSetStatus: 0} {
		if counts[op] != want {
			t.Errorf("store requests for %s = %d, want %d", op, counts[op], want)
		}
	}
}
