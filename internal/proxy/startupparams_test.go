package proxy

import (
	"bytes"
	"io"
	"log/slog"
	"maps"
	"reflect"
	"strings"
	"testing"
)

func TestParseOptions(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    [][2]string
		wantErr string
	}{
		{in: "", want: nil},
		{in: "   ", want: nil},
		{in: "-c search_path=app", want: [][2]string{{"search_path", "app"}}},
		{in: "-csearch_path=app -c extra_float_digits=3", want: [][2]string{{"search_path", "app"}, {"extra_float_digits", "3"}}},
		{in: "--search-path=app", want: [][2]string{{"search_path", "app"}}},
		{in: `-c search_path=my\ schema,public`, want: [][2]string{{"search_path", "my schema,public"}}},
		{in: `-c application_name=a\\b`, want: [][2]string{{"application_name", `a\b`}}},
		{in: "-c statement_timeout=", want: [][2]string{{"statement_timeout", ""}}},
		{in: "\t-c\tTimeZone=UTC\n", want: [][2]string{{"TimeZone", "UTC"}}},
		{in: "-c", wantErr: "-c without name=value"},
		{in: "-c search_path", wantErr: `"search_path": want name=value`},
		{in: "-c =x", wantErr: "want name=value"},
		{in: "-B 100", wantErr: `"-B": only -c name=value settings are supported`},
		{in: "search_path=app", wantErr: "only -c name=value"},
	} {
		got, err := parseOptions(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "unsupported startup parameter: options") {
				t.Errorf("%q: %v, want an error with %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q: %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestClientParams(t *testing.T) {
	r := newStartupRules([]string{"search_path", "extra_float_digits", "TimeZone"}, []string{"geqo", "Options_Ignored_Test"})
	if want := []string{"application_name", "client_encoding", "DateStyle", "IntervalStyle", "TimeZone", "standard_conforming_strings", "search_path", "extra_float_digits"}; !reflect.DeepEqual(r.tracked, want) {
		t.Fatalf("tracked = %q, want %q (reported ones first, no duplicates)", r.tracked, want)
	}
	for _, tc := range []struct {
		name    string
		in      map[string]string
		want    map[string]string
		wantErr string
	}{
		{name: "psql", in: map[string]string{"user": "u", "database": "d", "application_name": "psql", "client_encoding": "UTF8"},
			want: map[string]string{"application_name": "psql", "client_encoding": "UTF8"}},
		{name: "pgx sends nothing else", in: map[string]string{"user": "u", "database": "d"}, want: map[string]string{}},
		{name: "JDBC", in: map[string]string{"user": "u", "database": "d", "client_encoding": "UTF8", "DateStyle": "ISO",
			"TimeZone": "Europe/Paris", "extra_float_digits": "3", "application_name": "PostgreSQL JDBC Driver"},
			want: map[string]string{"client_encoding": "UTF8", "DateStyle": "ISO", "TimeZone": "Europe/Paris", "extra_float_digits": "3", "application_name": "PostgreSQL JDBC Driver"}},
		{name: "libpq environment spelling is case-insensitive", in: map[string]string{"datestyle": "ISO, DMY", "timezone": "UTC"},
			want: map[string]string{"DateStyle": "ISO, DMY", "TimeZone": "UTC"}},
		{name: "ignored", in: map[string]string{"geqo": "on", "GEQO": "off"}, want: map[string]string{}},
		{name: "options", in: map[string]string{"options": "-c search_path=app --extra-float-digits=2 -c geqo=off"},
			want: map[string]string{"search_path": "app", "extra_float_digits": "2"}},
		{name: "the packet overrides options", in: map[string]string{"options": "-c search_path=a", "search_path": "b"},
			want: map[string]string{"search_path": "b"}},
		{name: "unknown", in: map[string]string{"statement_timeout": "5s"}, wantErr: "unsupported startup parameter: statement_timeout"},
		{name: "unknown in options", in: map[string]string{"options": "-c work_mem=1GB"}, wantErr: "unsupported startup parameter: work_mem"},
		{name: "other switches in options", in: map[string]string{"options": "-d 5"}, wantErr: "unsupported startup parameter: options"},
		{name: "the first unknown name, sorted", in: map[string]string{"zz": "1", "aa": "1"}, wantErr: "unsupported startup parameter: aa"},
		{name: "protocol options", in: map[string]string{"_pq_.compression": "on"}, wantErr: "unsupported startup parameter: _pq_.compression"},
	} {
		got, err := r.clientParams(tc.in)
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr && !strings.HasPrefix(err.Error(), tc.wantErr) {
				t.Errorf("%s: %v, want %q", tc.name, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !maps.Equal(got, tc.want) {
			t.Errorf("%s: %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
	// ignore_startup_parameters: options drops the whole options string unread.
	r = newStartupRules(nil, []string{"options"})
	if got, err := r.clientParams(map[string]string{"options": "-B 100 -c work_mem=1GB"}); err != nil || len(got) != 0 {
		t.Errorf("ignored options: %v, %v", got, err)
	}
}

func testServer(extra []string, base, cur map[string]string) *server {
	p := &Proxy{}
	p.startup = newStartupRules(extra, nil)
	return &server{pool: &pool{be: &backend{p: p}}, base: base, params: cur, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

func TestSyncParams(t *testing.T) {
	base := map[string]string{"application_name": "pgvigil-proxy", "client_encoding": "UTF8", "DateStyle": "ISO, MDY",
		"IntervalStyle": "postgres", "TimeZone": "UTC", "standard_conforming_strings": "on"}
	for _, tc := range []struct {
		name       string
		client     map[string]string
		server     map[string]string // current settings beyond base
		want       string
		wantParams map[string]string // beyond base
	}{
		{name: "nothing differs: nothing sent", client: map[string]string{"client_encoding": "UTF8"}, want: ""},
		{name: "reported and extra settings", client: map[string]string{"application_name": "app", "search_path": "s1, public"},
			want:       "SELECT pg_catalog.set_config('application_name', $pgv$app$pgv$, false), pg_catalog.set_config('search_path', $pgv$s1, public$pgv$, false);",
			wantParams: map[string]string{"application_name": "app", "search_path": "s1, public"}},
		{name: "an earlier client's extra setting is reset", server: map[string]string{"search_path": "other"},
			want: "RESET search_path;"},
		{name: "a value with quotes, backslashes and the tag", client: map[string]string{"search_path": `a'b\c$pgv$`},
			want:       `SELECT pg_catalog.set_config('search_path', $pgv0$a'b\c$pgv$$pgv0$, false);`,
			wantParams: map[string]string{"search_path": `a'b\c$pgv$`}},
		{name: "back to the server's own value", server: map[string]string{"TimeZone": "Asia/Tokyo"},
			want: "SELECT pg_catalog.set_config('TimeZone', $pgv$UTC$pgv$, false);"},
	} {
		cur := maps.Clone(base)
		maps.Copy(cur, tc.server)
		s := testServer([]string{"search_path", "extra_float_digits"}, base, cur)
		var q strings.Builder
		s.syncParams(&client{params: tc.client}, &q)
		if q.String() != tc.want {
			t.Errorf("%s: query %q, want %q", tc.name, q.String(), tc.want)
		}
		want := maps.Clone(base)
		maps.Copy(want, tc.wantParams)
		if !maps.Equal(s.params, want) {
			t.Errorf("%s: server settings %v, want %v", tc.name, s.params, want)
		}
	}

	// After a failed internal query nothing is known: everything is set or reset again.
	s := testServer([]string{"search_path"}, base, maps.Clone(base))
	s.params["search_path"] = "x"
	s.forgetParams()
	var q strings.Builder
	s.syncParams(&client{params: map[string]string{}}, &q)
	if !strings.HasPrefix(q.String(), "SELECT pg_catalog.set_config('application_name', $pgv$pgvigil-proxy$pgv$, false), ") ||
		!strings.HasSuffix(q.String(), "pg_catalog.set_config('standard_conforming_strings', $pgv$on$pgv$, false);RESET search_path;") {
		t.Errorf("after a failure: %q", q.String())
	}
}

func TestDollarQuote(t *testing.T) {
	for in, want := range map[string]string{
		"":            "$pgv$$pgv$",
		"plain":       "$pgv$plain$pgv$",
		"x$pgv":       "$pgv0$x$pgv$pgv0$", // would end early: "x" + "$pgv$" matches inside
		"$pgv$":       "$pgv0$$pgv$$pgv0$",
		"$pgv$$pgv0$": "$pgv1$$pgv$$pgv0$$pgv1$",
	} {
		if got := dollarQuote(in); got != want {
			t.Errorf("dollarQuote(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestInternalSetFollowsNormalisedValue: the ParameterStatus answering the proxy's own SET
// updates the attached client's wish, so the next attach finds nothing to send.
func TestInternalSetFollowsNormalisedValue(t *testing.T) {
	base := map[string]string{"DateStyle": "ISO, MDY"}
	s := testServer(nil, base, maps.Clone(base))
	c := &client{params: map[string]string{"DateStyle": "iso, dmy"}}
	var q strings.Builder
	s.syncParams(c, &q)
	if !strings.Contains(q.String(), "iso, dmy") {
		t.Fatalf("first attach: %q, want a SET of DateStyle", q.String())
	}
	frame := []byte{'S', 0, 0, 0, 0}
	frame = append(frame, "DateStyle\x00ISO, DMY\x00"...)
	frame[4] = byte(len(frame) - 1)
	s.rd = newServerReader(bytes.NewReader(frame))
	s.client = c
	typ, n, err := s.rd.next()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.swallowInternal(typ, n); err != nil {
		t.Fatal(err)
	}
	q.Reset()
	s.syncParams(c, &q)
	if q.Len() != 0 || c.params["DateStyle"] != "ISO, DMY" {
		t.Errorf("after the server's report: query %q, client DateStyle %q; want nothing to send and ISO, DMY", q.String(), c.params["DateStyle"])
	}
}
