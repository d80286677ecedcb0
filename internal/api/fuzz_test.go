package api

import (
	"bytes"
	"math"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pgvigil/pgvigil/internal/agent"
	"github.com/pgvigil/pgvigil/internal/cluster"
	"github.com/pgvigil/pgvigil/internal/ha"
	"github.com/pgvigil/pgvigil/internal/postgres"
)

// Run with: go test -run='^$' -fuzz='^FuzzRequest$' -fuzztime=20s ./internal/api/
// (and -fuzz='^FuzzParseBytes$'). The seeds in testdata/fuzz run with every go test.

// fuzzSource is pure data: a streaming replica with a lagging, fully populated cluster view, so
// that health checks, /cluster, /history and /config all have something to chew on.
func fuzzSource() secSource {
	xlog, recv, replay := int64(1<<40), int64(1<<40-100), int64(math.MaxInt64/2)
	sysid := "7000000000000000001"
	view := &cluster.View{
		Revision: 42, Initialize: &sysid, Leader: &cluster.Leader{Name: "node2", Lease: 7, ModRevision: 40},
		Members: []cluster.Member{
			{Name: "node1", ConnURL: "postgres://10.0.0.1:5432/postgres", APIURL: "http://10.0.0.1:8008/patroni", State: "streaming",
				Role: "replica", XLogLocation: &xlog, ReceiveLSN: &recv, ReplayLSN: &replay, ReplicationState: "streaming", Timeline: 3,
				Tags: cluster.Tags{FailoverPriority: 1, Extra: map[string]any{"zone": "a", "": nil, "weird\x00key": []any{1, "x", nil}}}},
			{Name: "node2", ConnURL: "postgres://[::1]:5432/postgres", APIURL: "https://[::1]:8008/patroni", State: "running",
				Role: "primary", Timeline: 3, Tags: cluster.Tags{NoFailover: true}},
			{Name: "node3", ConnURL: "not a url", APIURL: "::", State: "stopped", Role: "replica"},
		},
		Config:    cluster.DefaultDynamicConfig(),
		HasConfig: true,
		History:   []cluster.HistoryEntry{{Timeline: 1, LSN: 1 << 24, Reason: "no recovery target specified", Timestamp: "2024-01-01T00:00:00+00:00", NewLeader: "node2"}},
		Status:    cluster.Status{Optime: math.MaxInt64, Slots: map[string]int64{"node1": 1 << 40}},
	}
	return secSource{
		snap: agent.Snapshot{At: time.Now(), View: view, Config: view.Config, LastStoreOK: time.Now()},
		live: postgres.Status{
			PGState: ha.PGState{DataDir: ha.DataValid, Running: true, Ready: true, InRecovery: true, Timeline: 3,
				Position: 1 << 40, SysID: sysid},
			ReceiveLSN: 1<<40 - 100, ReplayLSN: 1<<40 - 200, ReplicationState: "streaming", StartTime: time.Now().Add(-time.Hour),
			ServerVersion: 160004, ReplayedAt: time.Now(),
		},
	}
}

// fuzzHandlers: an open server and one with Basic auth and an allowlist the fuzzed requests come
// from inside of.
func fuzzHandlers() (open, guarded http.Handler) {
	src := fuzzSource()
	tags := cluster.Tags{FailoverPriority: 2, NoLoadBalance: true, Extra: map[string]any{"zone": "b", "rack": 7}}
	o := Options{Source: src, Name: "node1", Scope: "demo", Version: "fuzz", Tags: tags, LiveTTL: time.Hour}
	open = New(o).Handler()
	o.Auth = &BasicAuth{Username: "u", Password: "p"}
	o.Allowlist = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	o.AllowlistIncludeMembers = true
	o.MaxBodyBytes = 100
	guarded = New(o).Handler()
	return open, guarded
}

// wroteRecorder notes whether the handler answered at all.
type wroteRecorder struct {
	*httptest.ResponseRecorder
	wrote bool
}

func (w *wroteRecorder) WriteHeader(code int) { w.wrote = true; w.ResponseRecorder.WriteHeader(code) }
func (w *wroteRecorder) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseRecorder.Write(b)
}

// FuzzRequest sends arbitrary requests through the whole handler (access control, routing,
// health checks, status, operations): it must not panic, must answer, and may only fail with the
// 5xx codes Patroni uses (501 unsupported, 502 store unreachable, 503 unhealthy/unavailable).
// An empty auth goes to the open server, any other value is sent as the Authorization header of
// the guarded one.
func FuzzRequest(f *testing.F) {
	open, guarded := fuzzHandlers()
	f.Add("GET", "/replica", "lag=16MB&tag_zone=a", []byte(nil), "")
	f.Add("POST", "/switchover", "", []byte(`{"leader":"node2","candidate":"node1"}`), "Basic dTpw")
	f.Add("PATCH", "/config", "", []byte(`{"ttl":`), "")
	f.Fuzz(func(t *testing.T, method, path, query string, body []byte, auth string) {
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		target := "http://node1:8008" + path
		if query != "" {
			target += "?" + query
		}
		req, err := http.NewRequest(method, target, bytes.NewReader(body))
		if err != nil {
			return // not a request a server could receive
		}
		req.RemoteAddr = "192.0.2.10:40000"
		h := open
		if auth != "" {
			h = guarded
			req.Header.Set("Authorization", auth)
		}
		w := &wroteRecorder{ResponseRecorder: httptest.NewRecorder()}
		h.ServeHTTP(w, req)
		if !w.wrote {
			t.Fatalf("%s %s: no response written", method, target)
		}
		switch code := w.Code; {
		case code < 100 || code > 599:
			t.Fatalf("%s %s: status %d", method, target, code)
		case code >= 500 && code != 501 && code != 502 && code != 503:
			t.Fatalf("%s %s: status %d %q", method, target, code, w.Body)
		}
	})
}

// FuzzParseBytes checks ParseBytes against exact arithmetic: a size that is returned is the
// number times its unit, and one that does not fit in int64 must be an error, not a wrapped value.
func FuzzParseBytes(f *testing.F) {
	for _, s := range []string{"0", "1048576", "16MB", " 16 MB ", "1kB", "3TB", "-1", "1.5GB", "", "kB", "9223372036854775807",
		"9223372036854775807B", "8388607TB", "+5GB", "0x10", "1_000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseBytes(s)
		want, ok := exactBytes(s)
		switch {
		case !ok && err == nil:
			t.Fatalf("ParseBytes(%q) = %d, want an error", s, n)
		case ok && err != nil:
			t.Fatalf("ParseBytes(%q): %v, want %d", s, err, want)
		case ok && n != want:
			t.Fatalf("ParseBytes(%q) = %d, want %d", s, n, want)
		case err == nil && n < 0:
			t.Fatalf("ParseBytes(%q) = %d, negative", s, n)
		}
	})
}

// exactBytes is the reference: the same grammar as ParseBytes, evaluated with big integers.
func exactBytes(s string) (int64, bool) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range byteUnits {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(v), u.mult
			break
		}
	}
	// strconv.ParseInt's base-10 grammar: an optional sign, then ASCII digits only.
	digits := strings.TrimPrefix(strings.TrimPrefix(s, "+"), "-")
	if digits == "" || strings.Trim(digits, "0123456789") != "" {
		return 0, false
	}
	v, ok := new(big.Int).SetString(s, 10)
	if !ok || v.Sign() < 0 {
		return 0, false
	}
	v.Mul(v, big.NewInt(mult))
	if !v.IsInt64() {
		return 0, false
	}
	return v.Int64(), true
}
