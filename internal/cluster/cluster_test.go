package cluster

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

func asMap(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s is not a JSON object: %v", b, err)
	}
	return m
}

func TestTagsMarshal(t *testing.T) {
	tests := []struct {
		name string
		tags Tags
		want map[string]any
	}{
		{"defaults write nothing", Tags{FailoverPriority: 1}, map[string]any{}},
		{"nofailover", Tags{NoFailover: true, FailoverPriority: 1}, map[string]any{"nofailover": true}},
		{"nofailover hides the priority", Tags{NoFailover: true, FailoverPriority: 5}, map[string]any{"nofailover": true}},
		{"priority other than 1", Tags{FailoverPriority: 3}, map[string]any{"failover_priority": 3.0}},
		{"priority 0", Tags{FailoverPriority: 0}, map[string]any{"failover_priority": 0.0}},
		{"all built-in tags", Tags{FailoverPriority: 2, NoLoadBalance: true, CloneFrom: true, NoSync: true},
			map[string]any{"failover_priority": 2.0, "noloadbalance": true, "clonefrom": true, "nosync": true}},
		{"false built-in tags are omitted", Tags{FailoverPriority: 1, NoLoadBalance: false, CloneFrom: false, NoSync: false},
			map[string]any{}},
		{"custom tags kept", Tags{FailoverPriority: 1, Extra: map[string]any{"zone": "eu-1", "weight": 2.0, "x": map[string]any{"y": true}}},
			map[string]any{"zone": "eu-1", "weight": 2.0, "x": map[string]any{"y": true}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(tc.tags)
			if err != nil {
				t.Fatal(err)
			}
			if got := asMap(t, b); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("marshal = %s, want %v", b, tc.want)
			}
		})
	}
}

func TestTagsRoundTrip(t *testing.T) {
	for _, tags := range []Tags{
		{FailoverPriority: 1},
		{NoFailover: true, FailoverPriority: 1},
		{FailoverPriority: 0},
		{FailoverPriority: 7, NoLoadBalance: true},
		{FailoverPriority: 1, CloneFrom: true, NoSync: true},
		{FailoverPriority: 2, Extra: map[string]any{"zone": "a", "n": 1.5, "flag": false, "list": []any{"a", 1.0}}},
	} {
		b, err := json.Marshal(tags)
		if err != nil {
			t.Fatal(err)
		}
		var got Tags
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("unmarshal %s: %v", b, err)
		}
		if !reflect.DeepEqual(got, tags) {
			t.Errorf("round trip of %+v through %s gave %+v", tags, b, got)
		}
	}
}

func TestTagsUnmarshalPatroni(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Tags
	}{
		{"empty object", `{}`, Tags{FailoverPriority: 1}},
		{"no failover_priority means 1", `{"nofailover": false, "clonefrom": true, "zone": "b"}`,
			Tags{FailoverPriority: 1, CloneFrom: true, Extra: map[string]any{"zone": "b"}}},
		{"explicit priority", `{"failover_priority": 0}`, Tags{FailoverPriority: 0}},
		{"explicit priority 10", `{"failover_priority": 10, "nosync": true}`, Tags{FailoverPriority: 10, NoSync: true}},
		{"string booleans", `{"nofailover": "true", "noloadbalance": "on", "nosync": "yes", "clonefrom": "no"}`,
			Tags{FailoverPriority: 1, NoFailover: true, NoLoadBalance: true, NoSync: true}},
		{"numeric booleans", `{"nofailover": 1, "noloadbalance": 0}`, Tags{FailoverPriority: 1, NoFailover: true}},
		{"null is false", `{"nofailover": null}`, Tags{FailoverPriority: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got Tags
			if err := json.Unmarshal([]byte(tc.in), &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("unmarshal %s = %+v, want %+v", tc.in, got, tc.want)
			}
		})
	}
}

func TestTagsUnmarshalResets(t *testing.T) {
	got := Tags{NoFailover: true, FailoverPriority: 9, Extra: map[string]any{"old": 1.0}}
	if err := json.Unmarshal([]byte(`{"nosync": true}`), &got); err != nil {
		t.Fatal(err)
	}
	if want := (Tags{FailoverPriority: 1, NoSync: true}); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func TestTagsUnmarshalRejectsNonObject(t *testing.T) {
	var tags Tags
	for _, in := range []string{`[1]`, `"x"`, `1`} {
		if err := json.Unmarshal([]byte(in), &tags); err == nil {
			t.Errorf("unmarshal %s: no error", in)
		}
	}
}

func TestHistoryEntryMarshal(t *testing.T) {
	h := HistoryEntry{Timeline: 1, LSN: 67109256, Reason: "no recovery target specified",
		Timestamp: "2026-11-21T23:21:04.085655+00:00", NewLeader: "node1"}
	b, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	const want = `[1,67109256,"no recovery target specified","2026-11-21T23:21:04.085655+00:00","node1"]`
	if string(b) != want {
		t.Fatalf("marshal = %s, want %s", b, want)
	}
	var back HistoryEntry
	if err := json.Unmarshal(b, &back); err != nil || back != h {
		t.Fatalf("round trip = %+v, %v; want %+v", back, err, h)
	}
	// A whole history key, as Patroni stores it.
	hist := []HistoryEntry{h, {Timeline: 2, LSN: 83886240, Reason: "no recovery target specified", Timestamp: "t2", NewLeader: "node2"}}
	b, err = json.Marshal(hist)
	if err != nil {
		t.Fatal(err)
	}
	var hist2 []HistoryEntry
	if err := json.Unmarshal(b, &hist2); err != nil || !reflect.DeepEqual(hist, hist2) {
		t.Fatalf("history round trip = %+v, %v", hist2, err)
	}
}

func TestHistoryEntryUnmarshal(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want HistoryEntry
	}{
		{"five elements", `[1,67109256,"no recovery target specified","2026-11-21T23:21:04.085655+00:00","node1"]`,
			HistoryEntry{1, 67109256, "no recovery target specified", "2026-11-21T23:21:04.085655+00:00", "node1"}},
		{"four elements", `[3, 100663456, "no recovery target specified", "2023-05-01T10:00:00.000000+00:00"]`,
			HistoryEntry{3, 100663456, "no recovery target specified", "2023-05-01T10:00:00.000000+00:00", ""}},
		{"three elements", `[2, 50331808, "reason"]`, HistoryEntry{2, 50331808, "reason", "", ""}},
		{"large LSN", `[7, 97517520896, "r", "t", "n"]`, HistoryEntry{7, 97517520896, "r", "t", "n"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got HistoryEntry
			if err := json.Unmarshal([]byte(tc.in), &got); err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("unmarshal %s = %+v, want %+v", tc.in, got, tc.want)
			}
		})
	}
	for _, bad := range []string{`[]`, `[1]`, `[1, 2]`, `{"timeline": 1}`, `"x"`} {
		var h HistoryEntry
		if err := json.Unmarshal([]byte(bad), &h); err == nil {
			t.Errorf("unmarshal %s: no error", bad)
		}
	}
}

func TestMemberJSONFieldNames(t *testing.T) {
	x, r, p := int64(67108960), int64(67108000), int64(67107000)
	m := Member{Name: "node1", ConnURL: "postgres://10.0.0.1:5432/postgres", APIURL: "http://10.0.0.1:8008/patroni",
		State: StateRunning, Role: RoleReplica, Version: "3.0.2", XLogLocation: &x, ReceiveLSN: &r, ReplayLSN: &p,
		ReplicationState: "streaming", Timeline: 2, Tags: Tags{FailoverPriority: 1, NoSync: true}, PendingRestart: true}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	got := asMap(t, b)
	want := map[string]any{
		"conn_url": "postgres://10.0.0.1:5432/postgres", "api_url": "http://10.0.0.1:8008/patroni",
		"state": "running", "role": "replica", "version": "3.0.2", "xlog_location": 67108960.0,
		"receive_lsn": 67108000.0, "replay_lsn": 67107000.0, "replication_state": "streaming",
		"timeline": 2.0, "tags": map[string]any{"nosync": true}, "pending_restart": true,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("marshal = %s\nwant %v", b, want)
	}
	if _, ok := got["name"]; ok {
		t.Fatalf("name must not be in the member value: %s", b)
	}

	// Optional fields are omitted when unset; the always-present ones stay.
	b, err = json.Marshal(Member{Name: "n", ConnURL: "postgres://h:1/postgres", State: StateStopped, Role: RolePrimary, Tags: Tags{FailoverPriority: 1}})
	if err != nil {
		t.Fatal(err)
	}
	got = asMap(t, b)
	for _, k := range []string{"xlog_location", "receive_lsn", "replay_lsn", "replication_state", "timeline", "pending_restart"} {
		if _, ok := got[k]; ok {
			t.Errorf("%s present in %s", k, b)
		}
	}
	for _, k := range []string{"conn_url", "api_url", "state", "role", "version", "tags"} {
		if _, ok := got[k]; !ok {
			t.Errorf("%s missing from %s", k, b)
		}
	}
}

func TestMemberXLogLocationZero(t *testing.T) {
	zero := int64(0)
	b, err := json.Marshal(Member{XLogLocation: &zero, Tags: Tags{FailoverPriority: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := asMap(t, b)["xlog_location"]; !ok || v != 0.0 {
		t.Fatalf("a known position of 0 must be written: %s", b)
	}
}

func TestMemberDecodePatroni302(t *testing.T) {
	const in = `{"conn_url":"postgres://127.0.0.1:15432/postgres","api_url":"http://127.0.0.1:18008/patroni","state":"running","role":"replica","version":"3.0.2","xlog_location":67108960,"timeline":1}`
	var m Member
	if err := json.Unmarshal([]byte(in), &m); err != nil {
		t.Fatal(err)
	}
	if m.ConnURL != "postgres://127.0.0.1:15432/postgres" || m.APIURL != "http://127.0.0.1:18008/patroni" ||
		m.State != StateRunning || m.Role != RoleReplica || m.Version != "3.0.2" || m.Timeline != 1 {
		t.Fatalf("decoded %+v", m)
	}
	if m.XLogLocation == nil || *m.XLogLocation != 67108960 {
		t.Fatalf("xlog_location = %v, want 67108960", m.XLogLocation)
	}
	if m.ReceiveLSN != nil || m.ReplayLSN != nil || m.ReplicationState != "" || m.PendingRestart {
		t.Fatalf("absent fields decoded as set: %+v", m)
	}
	if h, p := m.HostPort(); h != "127.0.0.1" || p != 15432 {
		t.Fatalf("HostPort = %s:%d", h, p)
	}

	// With tags, as Patroni writes them when configured.
	const withTags = `{"conn_url":"postgres://10.0.0.3:5432/postgres","api_url":"http://10.0.0.3:8008/patroni","state":"running","role":"primary","version":"4.0.4","xlog_location":1,"timeline":3,"tags":{"nofailover":true,"dc":"west"}}`
	m = Member{}
	if err := json.Unmarshal([]byte(withTags), &m); err != nil {
		t.Fatal(err)
	}
	if want := (Tags{NoFailover: true, FailoverPriority: 1, Extra: map[string]any{"dc": "west"}}); !reflect.DeepEqual(m.Tags, want) {
		t.Fatalf("tags = %+v, want %+v", m.Tags, want)
	}
	if m.Role != RolePrimary || m.Timeline != 3 {
		t.Fatalf("decoded %+v", m)
	}
}

func TestParseConnURL(t *testing.T) {
	tests := []struct {
		in       string
		host     string
		wantPort int
	}{
		{"postgres://127.0.0.1:15432/postgres", "127.0.0.1", 15432},
		{"postgres://db.example.com/postgres", "db.example.com", 5432},
		{"postgresql://10.0.0.1:6432", "10.0.0.1", 6432},
		{"postgres://[::1]:5433/postgres", "::1", 5433},
		{"postgres://[fe80::1]/postgres", "fe80::1", 5432},
		{"postgres://user:pw@h:7000/db?sslmode=require", "h", 7000},
		{"", "", 5432},
		{"::not a url", "", 0},
	}
	for _, tc := range tests {
		h, p := ParseConnURL(tc.in)
		if h != tc.host || p != tc.wantPort {
			t.Errorf("ParseConnURL(%q) = %q, %d; want %q, %d", tc.in, h, p, tc.host, tc.wantPort)
		}
	}
}

func TestDynamicConfigDurations(t *testing.T) {
	c := DynamicConfig{TTL: 30, LoopWait: 10, RetryTimeout: 7}
	if c.TTLDuration() != 30*time.Second || c.LoopDuration() != 10*time.Second || c.RetryDuration() != 7*time.Second {
		t.Fatalf("durations = %v %v %v", c.TTLDuration(), c.LoopDuration(), c.RetryDuration())
	}
	if got := c.StartTimeout(); got != 30*time.Second {
		t.Fatalf("StartTimeout unset = %v, want 30s", got)
	}
	zero, five := 0, 5
	c.PrimaryStartTimeout = &zero
	if got := c.StartTimeout(); got != 0 {
		t.Fatalf("StartTimeout explicit 0 = %v, want 0", got)
	}
	c.PrimaryStartTimeout = &five
	if got := c.StartTimeout(); got != 5*time.Second {
		t.Fatalf("StartTimeout 5 = %v", got)
	}
}

func TestDynamicConfigJSON(t *testing.T) {
	var c DynamicConfig
	if err := json.Unmarshal([]byte(`{"ttl":30,"loop_wait":10,"retry_timeout":10,"maximum_lag_on_failover":1048576,"primary_start_timeout":0,
		"postgresql":{"use_pg_rewind":true,"use_slots":true,"parameters":{"max_connections":100,"wal_level":"replica","hot_standby":true}}}`), &c); err != nil {
		t.Fatal(err)
	}
	if c.PrimaryStartTimeout == nil || *c.PrimaryStartTimeout != 0 || c.StartTimeout() != 0 {
		t.Fatalf("explicit primary_start_timeout 0 lost: %v", c.PrimaryStartTimeout)
	}
	if c.TTLDuration() != 30*time.Second || c.LoopDuration() != 10*time.Second || c.RetryDuration() != 10*time.Second ||
		c.MaximumLagOnFailover != 1048576 || !c.PostgreSQL.UsePgRewind || !c.PostgreSQL.UseSlots ||
		c.PostgreSQL.Parameters["max_connections"] != 100.0 || c.PostgreSQL.Parameters["hot_standby"] != true {
		t.Fatalf("decoded %+v", c)
	}

	c = DynamicConfig{}
	if err := json.Unmarshal([]byte(`{"ttl":30,"loop_wait":10,"retry_timeout":10}`), &c); err != nil {
		t.Fatal(err)
	}
	if c.PrimaryStartTimeout != nil || c.StartTimeout() != 30*time.Second {
		t.Fatalf("absent primary_start_timeout = %v, %v; want nil, 30s", c.PrimaryStartTimeout, c.StartTimeout())
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	m := asMap(t, b)
	if _, ok := m["primary_start_timeout"]; ok {
		t.Fatalf("unset primary_start_timeout written: %s", b)
	}
	if _, ok := m["pause"]; ok {
		t.Fatalf("pause=false written: %s", b)
	}

	zero := 0
	b, err = json.Marshal(DynamicConfig{PrimaryStartTimeout: &zero})
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := asMap(t, b)["primary_start_timeout"]; !ok || v != 0.0 {
		t.Fatalf("explicit primary_start_timeout 0 not written: %s", b)
	}
}

func TestDefaultDynamicConfig(t *testing.T) {
	c := DefaultDynamicConfig()
	if c.TTLDuration() != 10*time.Second || c.LoopDuration() != time.Second || c.RetryDuration() != 3*time.Second {
		t.Fatalf("default durations %v %v %v", c.TTLDuration(), c.LoopDuration(), c.RetryDuration())
	}
	if c.MaximumLagOnFailover != 1<<20 || !c.PostgreSQL.UsePgRewind || !c.PostgreSQL.UseSlots || c.Pause {
		t.Fatalf("defaults %+v", c)
	}
	if c.StartTimeout() != 30*time.Second {
		t.Fatalf("default StartTimeout %v", c.StartTimeout())
	}
	// The loop must be able to renew the lease several times within the TTL.
	if c.LoopDuration()+c.RetryDuration() >= c.TTLDuration() {
		t.Fatalf("loop_wait + retry_timeout >= ttl in %+v", c)
	}
}

func TestViewLookups(t *testing.T) {
	ms := []Member{{Name: "c"}, {Name: "a"}, {Name: "b"}}
	SortMembers(ms)
	if ms[0].Name != "a" || ms[1].Name != "b" || ms[2].Name != "c" {
		t.Fatalf("SortMembers = %v", ms)
	}
	v := &View{Members: ms, Leader: &Leader{Name: "b", Lease: 1}}
	if m, ok := v.Member("c"); !ok || m.Name != "c" {
		t.Fatalf("Member(c) = %+v, %v", m, ok)
	}
	if _, ok := v.Member("zz"); ok {
		t.Fatal("Member(zz) found")
	}
	if m, ok := v.LeaderMember(); !ok || m.Name != "b" {
		t.Fatalf("LeaderMember = %+v, %v", m, ok)
	}
	v.Leader = &Leader{Name: "gone"}
	if _, ok := v.LeaderMember(); ok {
		t.Fatal("LeaderMember found for a leader without a member key")
	}
	v.Leader = nil
	if _, ok := v.LeaderMember(); ok {
		t.Fatal("LeaderMember found without a leader")
	}
	var nilView *View
	if _, ok := nilView.LeaderMember(); ok {
		t.Fatal("LeaderMember on a nil view")
	}
}

func TestStatusJSON(t *testing.T) {
	b, err := json.Marshal(Status{Optime: 67108960})
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"optime":67108960}` {
		t.Fatalf("status = %s", b)
	}
	var s Status
	if err := json.Unmarshal([]byte(`{"optime":83886240,"slots":{"node2":83886240}}`), &s); err != nil {
		t.Fatal(err)
	}
	if s.Optime != 83886240 || s.Slots["node2"] != 83886240 {
		t.Fatalf("status = %+v", s)
	}
}
