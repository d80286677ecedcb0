package proxy

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// startupRules say what becomes of each startup parameter a client sends (PgBouncer ≥ 1.20):
// the reported settings and track_extra_parameters follow the client onto every server that
// runs its transactions; ignore_startup_parameters are dropped; anything else is refused, so
// no setting a client asked for is silently lost.
type startupRules struct {
	tracked []string          // canonical names: the reported settings, then the extra ones
	canon   map[string]string // lower-case name → canonical name, for tracked names
	ignored map[string]bool   // lower-case names
}

func newStartupRules(extra, ignore []string) *startupRules {
	r := &startupRules{canon: map[string]string{}, ignored: map[string]bool{}}
	for _, n := range slices.Concat(trackedParams, extra) {
		l := strings.ToLower(n)
		if _, dup := r.canon[l]; !dup {
			r.canon[l] = n
			r.tracked = append(r.tracked, n)
		}
	}
	for _, n := range ignore {
		r.ignored[strings.ToLower(n)] = true
	}
	return r
}

// errUnsupportedParam is refused at startup with FATAL 08P01, PgBouncer's message.
type errUnsupportedParam struct{ name string }

func (e *errUnsupportedParam) Error() string { return "unsupported startup parameter: " + e.name }

// clientParams returns the client's tracked settings from its startup parameters, in
// canonical spelling. Settings in options come first and the packet's own parameters
// override them, the order in which PostgreSQL applies them.
func (r *startupRules) clientParams(in map[string]string) (map[string]string, error) {
	out := map[string]string{}
	if opts, ok := in["options"]; ok && !r.ignored["options"] {
		pairs, err := parseOptions(opts)
		if err != nil {
			return nil, err
		}
		for _, kv := range pairs {
			if err := r.add(out, kv[0], kv[1]); err != nil {
				return nil, err
			}
		}
	}
	names := make([]string, 0, len(in))
	for k := range in {
		switch k {
		case "user", "database", "options", "replication":
		default:
			names = append(names, k)
		}
	}
	sort.Strings(names) // the first refused name is the same at every try
	for _, k := range names {
		if err := r.add(out, k, in[k]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (r *startupRules) add(out map[string]string, name, value string) error {
	l := strings.ToLower(name)
	if c, ok := r.canon[l]; ok {
		out[c] = value
		return nil
	}
	if r.ignored[l] {
		return nil
	}
	return &errUnsupportedParam{name: name}
}

// parseOptions reads the options startup parameter as PostgreSQL splits it (white space
// separates, a backslash takes the next character literally) and accepts only settings:
// "-c name=value", "-cname=value" and "--name=value", with '-' in names read as '_'.
func parseOptions(s string) ([][2]string, error) {
	var words []string
	var w strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
			continue
		case ch == '\\' && i+1 < len(s):
			i++
			ch = s[i]
		}
		w.WriteByte(ch)
		inWord = true
	}
	if inWord {
		words = append(words, w.String())
	}
	var out [][2]string
	for i := 0; i < len(words); i++ {
		var setting string
		switch wd := words[i]; {
		case wd == "-c":
			if i+1 == len(words) {
				return nil, &errUnsupportedParam{name: "options (-c without name=value)"}
			}
			i++
			setting = words[i]
		case strings.HasPrefix(wd, "--"):
			setting = wd[2:]
		case strings.HasPrefix(wd, "-c"):
			setting = wd[2:]
		default:
			return nil, &errUnsupportedParam{name: fmt.Sprintf("options (%q: only -c name=value settings are supported)", wd)}
		}
		name, value, ok := strings.Cut(setting, "=")
		if !ok || name == "" {
			return nil, &errUnsupportedParam{name: fmt.Sprintf("options (%q: want name=value)", setting)}
		}
		out = append(out, [2]string{strings.ReplaceAll(name, "-", "_"), value})
	}
	return out, nil
}

// unknownSetting marks a server's setting whose value the proxy no longer knows (an internal
// SET failed): it differs from every real value, since none holds a NUL byte.
const unknownSetting = "\x00"

// syncParams appends to q what makes the server's session settings the client's: one SELECT
// of set_config calls for tracked settings that differ (set_config takes the value as the
// startup packet gives it, so list settings such as search_path mean the same), and RESET for
// an extra setting an earlier client left when this client has none. s.mu and c.pmu held.
func (s *server) syncParams(c *client, q *strings.Builder) {
	var resets []string
	first := true
	for _, k := range s.pool.be.p.startup.tracked {
		want, ok := c.params[k]
		if !ok {
			want, ok = s.base[k]
		}
		cur, has := s.params[k]
		if !ok {
			if has {
				resets = append(resets, k)
				delete(s.params, k)
			}
			continue
		}
		if has && cur == want {
			continue
		}
		if len(want) > maxSettingLen {
			s.log.Warn("not carrying over an oversized session setting", "setting", k, "bytes", len(want))
			continue
		}
		if first {
			q.WriteString("SELECT ")
			first = false
		} else {
			q.WriteString(", ")
		}
		q.WriteString("pg_catalog.set_config('")
		q.WriteString(k) // a reported setting's name, or one track_extra_parameters validated
		q.WriteString("', ")
		q.WriteString(dollarQuote(want))
		q.WriteString(", false)")
		s.params[k] = want
	}
	if !first {
		q.WriteString(";")
	}
	for _, k := range resets {
		q.WriteString("RESET ")
		q.WriteString(k)
		q.WriteString(";")
	}
}

// dollarQuote makes a literal that means v whatever standard_conforming_strings and the
// client encoding are: no escapes inside, and '$' is never the second byte of a multibyte
// character in an encoding PostgreSQL accepts from clients (unlike '\').
func dollarQuote(v string) string {
	tag := "$pgv$"
	for i := 0; strings.Index(v+tag, tag) != len(v); i++ {
		tag = "$pgv" + strconv.Itoa(i) + "$"
	}
	return tag + v + tag
}

// forgetParams marks every tracked setting unknown after a failed internal query: what it
// applied before failing is unknown, so the next attach sets (or resets) them all. s.mu held.
func (s *server) forgetParams() {
	for _, k := range s.pool.be.p.startup.tracked {
		s.params[k] = unknownSetting
	}
}
