package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/pgvigil/pgvigil/internal/cluster"
	"github.com/pgvigil/pgvigil/internal/dcs"
	"github.com/pgvigil/pgvigil/internal/embedetcd"
)

const (
	testNamespace = "/service/"
	testScope     = "test"
	testPrefix    = "/service/test/"
)

func startEtcd(t *testing.T) *embedetcd.Server {
	t.Helper()
	srv, err := embedetcd.Start(t.TempDir())
	if err != nil {
		t.Fatalf("starting embedded etcd: %v", err)
	}
	t.Cleanup(srv.Close)
	return srv
}

func newStore(t *testing.T, endpoints []string, name string, ttl time.Duration) *Store {
	t.Helper()
	s, err := New(Config{
		Endpoints: endpoints, Namespace: testNamespace, Scope: testScope, Name: name,
		TTL: ttl, RetryTimeout: 3 * time.Second,
	})
	if err != nil {
		t.Fatalf("New(%s): %v", name, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func rawClient(t *testing.T, srv *embedetcd.Server) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: []string{srv.ClientURL()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("raw client: %v", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

func rawGet(t *testing.T, cli *clientv3.Client, key string) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, testPrefix+key)
	if err != nil {
		t.Fatalf("raw get %s: %v", key, err)
	}
	if len(resp.Kvs) == 0 {
		return "", false
	}
	return string(resp.Kvs[0].Value), true
}

func rawPut(t *testing.T, cli *clientv3.Client, key, val string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, testPrefix+key, val); err != nil {
		t.Fatalf("raw put %s: %v", key, err)
	}
}

func mustGet(t *testing.T, s *Store) *cluster.View {
	t.Helper()
	v, err := s.Get(context.Background())
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	return v
}

// eventually polls cond every 100 ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func member(name string, port string) cluster.Member {
	xlog := int64(67108960)
	return cluster.Member{
		Name:         name,
		ConnURL:      "postgres://127.0.0.1:" + port + "/postgres",
		APIURL:       "http://127.0.0.1:1" + port + "/patroni",
		State:        cluster.StateRunning,
		Role:         cluster.RolePrimary,
		Version:      "4.0.0",
		XLogLocation: &xlog,
		Timeline:     1,
		Tags:         cluster.Tags{FailoverPriority: 1},
	}
}

func TestLeaseExpiryDeletesLeaderKey(t *testing.T) {
	t.Parallel()
	srv := startEtcd(t)
	ctx := context.Background()
	a := newStore(t, srv.Endpoints(), "node1", 2*time.Second)
	if err := a.TouchMember(ctx, member("node1", "5432")); err != nil {
		t.Fatalf("TouchMember: %v", err)
	}
	if err := a.AcquireLeader(ctx); err != nil {
		t.Fatalf("AcquireLeader: %v", err)
	}
	v := mustGet(t, a)
	if v.Leader == nil || v.Leader.Name != "node1" || v.Leader.Lease != a.Lease() || v.Leader.Lease == 0 {
		t.Fatalf("leader after acquire = %+v, want node1 on lease %d", v.Leader, a.Lease())
	}
	if _, ok := v.Member("node1"); !ok {
		t.Fatalf("member node1 missing after TouchMember: %+v", v.Members)
	}

	// No keepalives from here on: the lease must run out.
	eventually(t, 15*time.Second, "the leader key to expire", func() bool {
		v = mustGet(t, a)
		return v.Leader == nil
	})
	if len(v.Members) != 0 {
		t.Fatalf("member keys survived the lease: %+v", v.Members)
	}
}

func TestKeepAliveReplacesExpiredLease(t *testing.T) {
	t.Parallel()
	srv := startEtcd(t)
	ctx := context.Background()
	a := newStore(t, srv.Endpoints(), "node1", 2*time.Second)
	if err := a.TouchMember(ctx, member("node1", "5432")); err != nil {
		t.Fatalf("TouchMember: %v", err)
	}
	if renewed, err := a.KeepAlive(ctx); err != nil || !renewed {
		t.Fatalf("KeepAlive on a live lease = %v, %v; want true, nil", renewed, err)
	}
	old := a.Lease()
	eventually(t, 15*time.Second, "the member key to expire", func() bool {
		return len(mustGet(t, a).Members) == 0
	})
	renewed, err := a.KeepAlive(ctx)
	if err != nil || renewed {
		t.Fatalf("KeepAlive on an expired lease = %v, %v; want false, nil", renewed, err)
	}
	if a.Lease() == old || a.Lease() == 0 {
		t.Fatalf("lease not replaced: old %d, now %d", old, a.Lease())
	}
	m, ok := mustGet(t, a).Member("node1")
	if !ok {
		t.Fatal("member key not re-put onto the new lease")
	}
	if want := member("node1", "5432"); !reflect.DeepEqual(m, want) {
		t.Fatalf("re-put member = %+v, want %+v", m, want)
	}
}

func TestConcurrentAcquireHasOneWinner(t *testing.T) {
	t.Parallel()
	srv := startEtcd(t)
	ctx := context.Background()
	stores := map[string]*Store{
		"node1": newStore(t, srv.Endpoints(), "node1", 10*time.Second),
		"node2": newStore(t, srv.Endpoints(), "node2", 10*time.Second),
	}
	for name, s := range stores {
		if err := s.TouchMember(ctx, member(name, "5432")); err != nil {
			t.Fatalf("TouchMember(%s): %v", name, err)
		}
	}
	type result struct {
		name string
		err  error
	}
	start := make(chan struct{})
	results := make(chan result, len(stores))
	for name, s := range stores {
		go func() {
			<-start
			results <- result{name, s.AcquireLeader(ctx)}
		}()
	}
	close(start)
	var winners, losers []string
	for range stores {
		r := <-results
		switch {
		case r.err == nil:
			winners = append(winners, r.name)
		case errors.Is(r.err, dcs.ErrExists):
			losers = append(losers, r.name)
		default:
			t.Fatalf("AcquireLeader(%s): unexpected error %v", r.name, r.err)
		}
	}
	if len(winners) != 1 || len(losers) != 1 {
		t.Fatalf("winners %v, losers %v; want exactly one of each", winners, losers)
	}
	w := winners[0]
	v := mustGet(t, stores[w])
	if v.Leader == nil || v.Leader.Name != w || v.Leader.Lease != stores[w].Lease() {
		t.Fatalf("leader = %+v, want %s on lease %d", v.Leader, w, stores[w].Lease())
	}
	if err := stores[losers[0]].RenewLeader(ctx); !errors.Is(err, dcs.ErrNotLeader) {
		t.Fatalf("loser RenewLeader = %v, want ErrNotLeader", err)
	}
	if err := stores[w].RenewLeader(ctx); err != nil {
		t.Fatalf("winner RenewLeader = %v", err)
	}
}

func TestRenewFailsAfterSomeoneElseTookTheKey(t *testing.T) {
	t.Parallel()
	srv := startEtcd(t)
	ctx := context.Background()
	a := newStore(t, srv.Endpoints(), "node1", 2*time.Second)
	b := newStore(t, srv.Endpoints(), "node2", 10*time.Second)
	if err := a.AcquireLeader(ctx); err != nil {
		t.Fatalf("A AcquireLeader: %v", err)
	}
	eventually(t, 15*time.Second, "A's leader key to expire", func() bool {
		return mustGet(t, a).Leader == nil
	})
	if err := b.AcquireLeader(ctx); err != nil {
		t.Fatalf("B AcquireLeader: %v", err)
	}
	if err := a.RenewLeader(ctx); !errors.Is(err, dcs.ErrNotLeader) {
		t.Fatalf("A RenewLeader = %v, want ErrNotLeader", err)
	}
	v := mustGet(t, b)
	if v.Leader == nil || v.Leader.Name != "node2" || v.Leader.Lease != b.Lease() {
		t.Fatalf("leader = %+v, want node2 on lease %d", v.Leader, b.Lease())
	}
	// Releasing someone else's key is a no-op, not an error.
	if err := a.ReleaseLeader(ctx); err != nil {
		t.Fatalf("A ReleaseLeader: %v", err)
	}
	if v := mustGet(t, b); v.Leader == nil || v.Leader.Name != "node2" {
		t.Fatalf("A's release touched B's key: %+v", v.Leader)
	}
}

func TestRenewMovesKeyOntoNewLease(t *testing.T) {
	t.Parallel()
	srv := startEtcd(t)
	ctx := context.Background()
	a1 := newStore(t, srv.Endpoints(), "node1", 10*time.Second)
	if err := a1.AcquireLeader(ctx); err != nil {
		t.Fatalf("A1 AcquireLeader: %v", err)
	}
	// The agent restarts: a new store, same name, new lease.
	a2 := newStore(t, srv.Endpoints(), "node1", 10*time.Second)
	if err := a2.TouchMember(ctx, member("node1", "5432")); err != nil {
		t.Fatalf("A2 TouchMember: %v", err)
	}
	if a2.Lease() == a1.Lease() {
		t.Fatalf("both stores share lease %d", a1.Lease())
	}
	if err := a2.RenewLeader(ctx); err != nil {
		t.Fatalf("A2 RenewLeader: %v", err)
	}
	v := mustGet(t, a2)
	if v.Leader == nil || v.Leader.Name != "node1" || v.Leader.Lease != a2.Lease() {
		t.Fatalf("leader = %+v, want node1 on A2's lease %d", v.Leader, a2.Lease())
	}
	// A second renewal takes the fast path and keeps it there.
	if err := a2.RenewLeader(ctx); err != nil {
		t.Fatalf("A2 second RenewLeader: %v", err)
	}
	if v := mustGet(t, a2); v.Leader == nil || v.Leader.Lease != a2.Lease() {
		t.Fatalf("leader after second renew = %+v", v.Leader)
	}
}

func TestWatchFiresOnLeaderDelete(t *testing.T) {
	t.Parallel()
	srv := startEtcd(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := newStore(t, srv.Endpoints(), "node1", 10*time.Second)
	if err := a.AcquireLeader(ctx); err != nil {
		t.Fatalf("AcquireLeader: %v", err)
	}
	ch := a.Watch(ctx)
	wait := func(what string) {
		t.Helper()
		select {
		case _, ok := <-ch:
			if !ok {
				t.Fatalf("watch channel closed while waiting for %s", what)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no watch notification for %s", what)
		}
	}
	wait("the watch to be established")
	if err := a.ReleaseLeader(ctx); err != nil {
		t.Fatalf("ReleaseLeader: %v", err)
	}
	wait("the leader key deletion")
	if v := mustGet(t, a); v.Leader != nil {
		t.Fatalf("leader still present after release: %+v", v.Leader)
	}
	cancel()
	select {
	case _, ok := <-ch:
		for ok {
			_, ok = <-ch
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watch channel not closed after ctx ended")
	}
}

func TestValueFormats(t *testing.T) {
	t.Parallel()
	srv := startEtcd(t)
	raw := rawClient(t, srv)
	ctx := context.Background()
	a := newStore(t, srv.Endpoints(), "node1", 10*time.Second)
	want := member("node1", "5432")
	if err := a.TouchMember(ctx, want); err != nil {
		t.Fatalf("TouchMember: %v", err)
	}
	if err := a.AcquireLeader(ctx); err != nil {
		t.Fatalf("AcquireLeader: %v", err)
	}
	if err := a.SetStatus(ctx, cluster.Status{Optime: 123}); err != nil {
		t.Fatalf("SetStatus: %v", err)
	}
	hist := []cluster.HistoryEntry{{
		Timeline: 1, LSN: 67109256, Reason: "no recovery target specified",
		Timestamp: "2026-11-21T23:21:04.085655+00:00", NewLeader: "node1",
	}}
	if err := a.SetHistory(ctx, hist); err != nil {
		t.Fatalf("SetHistory: %v", err)
	}

	exact := map[string]string{
		dcs.KeyLeader:  "node1",
		dcs.KeyStatus:  `{"optime":123}`,
		dcs.KeyHistory: `[[1,67109256,"no recovery target specified","2026-11-21T23:21:04.085655+00:00","node1"]]`,
	}
	for k, w := range exact {
		if got, ok := rawGet(t, raw, k); !ok || got != w {
			t.Errorf("raw %s = %q (present %v), want %q", k, got, ok, w)
		}
	}
	mv, ok := rawGet(t, raw, dcs.KeyMembers+"node1")
	if !ok {
		t.Fatal("member key absent")
	}
	for _, field := range []string{`"conn_url":`, `"api_url":`, `"state":"running"`, `"xlog_location":67108960`} {
		if !strings.Contains(mv, field) {
			t.Errorf("member value %s lacks %s", mv, field)
		}
	}
	var got cluster.Member
	if err := json.Unmarshal([]byte(mv), &got); err != nil {
		t.Fatalf("decoding member value %s: %v", mv, err)
	}
	got.Name = "node1" // the name lives in the key, not the value
	if !reflect.DeepEqual(got, want) {
		t.Errorf("member decoded = %+v, want %+v", got, want)
	}

	// The bootstrap race and the initialize key.
	if err := a.CreateInitialize(ctx); err != nil {
		t.Fatalf("CreateInitialize: %v", err)
	}
	if v, ok := rawGet(t, raw, dcs.KeyInitialize); !ok || v != "" {
		t.Errorf("initialize after create = %q (present %v), want empty", v, ok)
	}
	b := newStore(t, srv.Endpoints(), "node2", 10*time.Second)
	if err := b.CreateInitialize(ctx); !errors.Is(err, dcs.ErrExists) {
		t.Errorf("second CreateInitialize = %v, want ErrExists", err)
	}
	if err := a.SetInitialize(ctx, "7710768649556572578"); err != nil {
		t.Fatalf("SetInitialize: %v", err)
	}
	if v, _ := rawGet(t, raw, dcs.KeyInitialize); v != "7710768649556572578" {
		t.Errorf("initialize = %q", v)
	}

	// Config is created once; a second InitConfig neither fails nor overwrites.
	cfg := cluster.DefaultDynamicConfig()
	cfg.TTL = 30
	if err := a.InitConfig(ctx, cfg); err != nil {
		t.Fatalf("InitConfig: %v", err)
	}
	other := cluster.DefaultDynamicConfig()
	other.TTL = 99
	if err := b.InitConfig(ctx, other); err != nil {
		t.Fatalf("second InitConfig: %v", err)
	}
	cv, _ := rawGet(t, raw, dcs.KeyConfig)
	wantCfg, _ := json.Marshal(cfg)
	if cv != string(wantCfg) {
		t.Errorf("config = %s, want %s", cv, wantCfg)
	}

	v := mustGet(t, a)
	if v.Initialize == nil || *v.Initialize != "7710768649556572578" {
		t.Errorf("view initialize = %v", v.Initialize)
	}
	if !v.HasConfig || v.Config.TTL != 30 {
		t.Errorf("view config = %+v (has %v)", v.Config, v.HasConfig)
	}
	if !reflect.DeepEqual(v.History, hist) {
		t.Errorf("view history = %+v", v.History)
	}
	if v.Status.Optime != 123 {
		t.Errorf("view status = %+v", v.Status)
	}
	if m, ok := v.Member("node1"); !ok || !reflect.DeepEqual(m, want) {
		t.Errorf("view member = %+v, want %+v", m, want)
	}
	if v.Revision == 0 || v.Leader == nil || v.Leader.ModRevision == 0 {
		t.Errorf("view revisions missing: rev %d leader %+v", v.Revision, v.Leader)
	}

	if err := a.DeleteInitialize(ctx); err != nil {
		t.Fatalf("DeleteInitialize: %v", err)
	}
	if _, ok := rawGet(t, raw, dcs.KeyInitialize); ok {
		t.Error("initialize survived DeleteInitialize")
	}
	if err := a.DeleteMember(ctx); err != nil {
		t.Fatalf("DeleteMember: %v", err)
	}
	v = mustGet(t, a)
	if len(v.Members) != 0 || v.Leader != nil {
		t.Errorf("after DeleteMember: members %+v, leader %+v", v.Members, v.Leader)
	}
}

func TestReadsPatroniWrittenValues(t *testing.T) {
	t.Parallel()
	srv := startEtcd(t)
	raw := rawClient(t, srv)
	a := newStore(t, srv.Endpoints(), "node1", 10*time.Second)
	// patronictl edit-config style separators, with most settings left out.
	rawPut(t, raw, dcs.KeyConfig, `{"ttl": 30, "loop_wait": 10, "postgresql": {"parameters": {"max_connections": 100}}}`)
	rawPut(t, raw, dcs.KeyMembers+"node3", `{"conn_url":"postgres://127.0.0.1:15434/postgres","api_url":"http://127.0.0.1:18010/patroni","state":"running","role":"master","version":"3.0.2","xlog_location":67108960,"timeline":1}`)
	rawPut(t, raw, dcs.KeyMembers+"node2", `{"conn_url":"postgres://127.0.0.1:15433/postgres","api_url":"http://127.0.0.1:18009/patroni","state":"running","role":"replica","version":"3.0.2","tags":{"nofailover":true}}`)

	v := mustGet(t, a)
	def := cluster.DefaultDynamicConfig()
	if !v.HasConfig || v.Config.TTL != 30 || v.Config.LoopWait != 10 ||
		v.Config.RetryTimeout != def.RetryTimeout || !v.Config.PostgreSQL.UseSlots ||
		v.Config.PostgreSQL.Parameters["max_connections"] != float64(100) {
		t.Errorf("config = %+v (has %v)", v.Config, v.HasConfig)
	}
	if len(v.Members) != 2 || v.Members[0].Name != "node2" || v.Members[1].Name != "node3" {
		t.Fatalf("members = %+v, want node2, node3 in order", v.Members)
	}
	if v.Members[1].Tags.FailoverPriority != 1 || v.Members[1].Tags.NoFailover {
		t.Errorf("untagged Patroni member tags = %+v, want priority 1", v.Members[1].Tags)
	}
	if !v.Members[0].Tags.NoFailover {
		t.Errorf("node2 tags = %+v, want nofailover", v.Members[0].Tags)
	}
}

func TestMalformedValuesAreSkipped(t *testing.T) {
	t.Parallel()
	srv := startEtcd(t)
	raw := rawClient(t, srv)
	ctx := context.Background()
	a := newStore(t, srv.Endpoints(), "node1", 10*time.Second)
	if err := a.TouchMember(ctx, member("node1", "5432")); err != nil {
		t.Fatalf("TouchMember: %v", err)
	}
	rawPut(t, raw, dcs.KeyMembers+"bad", "{oops")
	rawPut(t, raw, dcs.KeyConfig, "{oops")
	rawPut(t, raw, dcs.KeyHistory, "not json")
	rawPut(t, raw, dcs.KeyStatus, "{")

	v := mustGet(t, a)
	if len(v.Members) != 1 || v.Members[0].Name != "node1" {
		t.Errorf("members = %+v, want only node1", v.Members)
	}
	if v.HasConfig || !reflect.DeepEqual(v.Config, cluster.DefaultDynamicConfig()) {
		t.Errorf("config = %+v (has %v), want defaults", v.Config, v.HasConfig)
	}
	if v.History != nil || v.Status.Optime != 0 {
		t.Errorf("history %+v, status %+v; want both empty", v.History, v.Status)
	}
}

func TestUnreachableStoreIsUnavailable(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()

	s, err := New(Config{
		Endpoints: []string{addr}, Namespace: testNamespace, Scope: testScope, Name: "node1",
		TTL: 10 * time.Second, RetryTimeout: time.Second,
	})
	if err != nil {
		t.Fatalf("New must not contact etcd, got %v", err)
	}
	defer s.Close()

	calls := map[string]func(context.Context) error{
		"Get":           func(ctx context.Context) error { _, err := s.Get(ctx); return err },
		"AcquireLeader": func(ctx context.Context) error { return s.AcquireLeader(ctx) },
		"RenewLeader":   func(ctx context.Context) error { return s.RenewLeader(ctx) },
		"TouchMember":   func(ctx context.Context) error { return s.TouchMember(ctx, member("node1", "5432")) },
	}
	for name, call := range calls {
		done := make(chan error, 1)
		go func() { done <- call(context.Background()) }()
		select {
		case err := <-done:
			if !errors.Is(err, dcs.ErrUnavailable) {
				t.Errorf("%s on an unreachable store = %v, want ErrUnavailable", name, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s did not return on an unreachable store", name)
		}
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	t.Parallel()
	for _, c := range []Config{
		{Scope: "s", Name: "n"},
		{Endpoints: []string{"127.0.0.1:2379"}, Name: "n"},
		{Endpoints: []string{"127.0.0.1:2379"}, Scope: "s"},
		{Endpoints: []string{"127.0.0.1:2379"}, Scope: "s", Name: "n", TTL: -time.Second},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted an invalid config", c)
		}
	}
}

func TestSetTTLMovesKeysToANewLease(t *testing.T) {
	t.Parallel()
	srv := startEtcd(t)
	ctx := context.Background()
	s := newStore(t, srv.Endpoints(), "node1", 10*time.Second)
	if err := s.TouchMember(ctx, member("node1", "5432")); err != nil {
		t.Fatal(err)
	}
	if err := s.AcquireLeader(ctx); err != nil {
		t.Fatal(err)
	}
	old := s.Lease()
	s.SetTTL(4 * time.Second)
	if err := s.RenewLeader(ctx); err != nil {
		t.Fatalf("RenewLeader after SetTTL: %v", err)
	}
	if s.Lease() == old {
		t.Fatal("SetTTL did not lead to a new lease")
	}
	v := mustGet(t, s)
	if v.Leader == nil || v.Leader.Name != "node1" || v.Leader.Lease != s.Lease() {
		t.Fatalf("leader = %+v, want node1 on the new lease %d", v.Leader, s.Lease())
	}
	if _, ok := v.Member("node1"); !ok {
		t.Fatal("member key lost in the move")
	}
	cli := rawClient(t, srv)
	resp, err := cli.TimeToLive(ctx, clientv3.LeaseID(s.Lease()))
	if err != nil || resp.GrantedTTL != 4 {
		t.Fatalf("new lease granted ttl = %v (%v), want 4", resp, err)
	}
}
