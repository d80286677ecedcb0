// Package redact keeps configured secrets out of what pgvigil writes: log records and error
// messages have every occurrence of a known password replaced before they leave the process.
package redact

import (
	"context"
	"log/slog"
	"regexp"
	"slices"
	"strings"
)

// Mask replaces a secret.
const Mask = "******"

// minLen: shorter secrets are still masked, but a one-character password would turn every
// log line into asterisks, so those are left alone (and such passwords are refused nowhere:
// they are the operator's business).
const minLen = 3

// Redactor masks a fixed set of secrets.
type Redactor struct {
	r *strings.Replacer
}

// New returns a Redactor for the given secrets; empty and very short ones are ignored.
func New(secrets ...string) *Redactor {
	s := slices.Clone(secrets)
	s = slices.DeleteFunc(s, func(x string) bool { return len(x) < minLen })
	// Longest first, so a secret that contains another is masked whole.
	slices.SortFunc(s, func(a, b string) int { return len(b) - len(a) })
	s = slices.Compact(s)
	if len(s) == 0 {
		return &Redactor{}
	}
	pairs := make([]string, 0, 2*len(s))
	for _, x := range s {
		pairs = append(pairs, x, Mask)
	}
	return &Redactor{r: strings.NewReplacer(pairs...)}
}

// String masks every secret in s.
func (x *Redactor) String(s string) string {
	if x == nil || x.r == nil {
		return s
	}
	return x.r.Replace(s)
}

// Error masks err's message; the result still unwraps to err for errors.Is and errors.As.
func (x *Redactor) Error(err error) error {
	if err == nil {
		return nil
	}
	msg := x.String(err.Error())
	if msg == err.Error() {
		return err
	}
	return &masked{msg: msg, err: err}
}

type masked struct {
	msg string
	err error
}

func (m *masked) Error() string { return m.msg }
func (m *masked) Unwrap() error { return m.err }

// Handler wraps h so that every record's message and attribute values are masked.
func (x *Redactor) Handler(h slog.Handler) slog.Handler {
	if x == nil || x.r == nil {
		return h
	}
	return &handler{x: x, next: h}
}

type handler struct {
	x    *Redactor
	next slog.Handler
}

func (h *handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, h.x.String(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.attr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	out := make([]slog.Attr, len(as))
	for i, a := range as {
		out[i] = h.attr(a)
	}
	return &handler{x: h.x, next: h.next.WithAttrs(out)}
}

func (h *handler) WithGroup(name string) slog.Handler {
	return &handler{x: h.x, next: h.next.WithGroup(name)}
}

// attr masks one attribute; values of any kind are compared through their text form, and only
// replaced (by a string) when that text held a secret.
func (h *handler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindGroup:
		g := v.Group()
		out := make([]slog.Attr, len(g))
		for i, ga := range g {
			out[i] = h.attr(ga)
		}
		return slog.Attr{Key: a.Key, Value: slog.GroupValue(out...)}
	case slog.KindString:
		return slog.String(a.Key, h.x.String(v.String()))
	case slog.KindAny:
		s := v.String()
		if m := h.x.String(s); m != s {
			return slog.String(a.Key, m)
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}

// conninfoPassword is a password in a libpq key/value connection string (password=x or
// password='x y'), and urlPassword the password in a URL's user information
// (postgres://user:x@host, etcd://root:x@host).
var (
	conninfoPassword = regexp.MustCompile(`(?i)(\b(?:pg)?password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s'"]+)`)
	urlPassword      = regexp.MustCompile(`(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)([^@\s/]+)@`)
)

// Conninfo masks passwords written into connection strings and URLs, whether or not they are
// known secrets: an error that quotes a DSN (a mistyped --dcs-url, a libpq string an operator
// passed) must not print the password it holds.
func Conninfo(s string) string {
	s = conninfoPassword.ReplaceAllString(s, "${1}"+Mask)
	return urlPassword.ReplaceAllString(s, "${1}"+Mask+"@")
}

// Message is the text of err to show a person: known secrets and any password written into a
// connection string or URL masked.
func (x *Redactor) Message(err error) string {
	if err == nil {
		return ""
	}
	return x.String(Conninfo(err.Error()))
}
