package config

import (
	"fmt"
	"regexp"
	"strings"
)

// problems checks the auth section: the client authentication method and auth_query.
func (a *ProxyAuth) problems() []*FieldError {
	var out []*FieldError
	add := func(key, format string, args ...any) {
		out = append(out, &FieldError{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	switch a.Type {
	case "scram-sha-256", "md5":
		if a.File == "" && a.User == "" {
			add("auth.file", "required with auth.type %s (unless auth.user enables auth_query): the file of users and passwords", a.Type)
		}
	case "trust":
		if a.User != "" {
			add("auth.user", "auth_query needs auth.type scram-sha-256 or md5: with trust no password is checked")
		}
	default:
		add("auth.type", "must be scram-sha-256, md5 or trust; got %q", a.Type)
	}
	if a.User == "" {
		if a.PasswordFile != "" {
			add("auth.password_file", "is the password of auth.user, which is not set")
		}
		if a.DBName != "" {
			add("auth.dbname", "is where auth.query runs as auth.user, which is not set")
		}
		return out
	}
	if strings.ContainsRune(a.User, 0) {
		add("auth.user", "must not contain a NUL byte")
	}
	if a.File == "" && a.PasswordFile == "" {
		add("auth.password_file", "required when auth.user is set and auth.file is not: the auth user's own password")
	}
	q := strings.TrimSpace(a.Query)
	switch {
	case q == "":
		add("auth.query", "must not be empty (default: %s)", DefaultAuthQuery)
	case !strings.Contains(q, "$1"):
		// The user name travels as a bound parameter, never spliced into the text.
		add("auth.query", "must take the user name as the parameter $1, got %q", a.Query)
	case strings.ContainsRune(q, 0):
		add("auth.query", "must not contain a NUL byte")
	}
	if strings.ContainsRune(a.DBName, 0) {
		add("auth.dbname", "must not contain a NUL byte")
	}
	return out
}

// parameterName is a run-time parameter's name as PostgreSQL accepts it: an identifier, or
// dotted identifiers for an extension's settings (myapp.tenant).
var parameterName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$`)

// startupParameterProblems checks track_extra_parameters and ignore_startup_parameters.
func (p *Proxy) startupParameterProblems() []*FieldError {
	var out []*FieldError
	add := func(key, format string, args ...any) {
		out = append(out, &FieldError{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	tracked := map[string]bool{}
	for _, n := range p.TrackExtraParameters {
		switch l := strings.ToLower(n); {
		case !parameterName.MatchString(n):
			add("track_extra_parameters", "%q is not a parameter name", n)
		case l == "user" || l == "database" || l == "replication" || l == "options":
			add("track_extra_parameters", "%q is part of the connection, not a session setting", n)
		default:
			tracked[l] = true
		}
	}
	for _, n := range p.IgnoreStartupParameters {
		switch l := strings.ToLower(n); {
		case !parameterName.MatchString(n):
			add("ignore_startup_parameters", "%q is not a parameter name", n)
		case l == "user" || l == "database" || l == "replication":
			add("ignore_startup_parameters", "%q cannot be ignored: it says who connects to what, and how", n)
		case tracked[l]:
			add("ignore_startup_parameters", "%q is also in track_extra_parameters; a parameter is either tracked or ignored", n)
		}
	}
	return out
}
