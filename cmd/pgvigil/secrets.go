package main

import (
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pgvigil/pgvigil/internal/config"
	"github.com/pgvigil/pgvigil/internal/proxy"
	"github.com/pgvigil/pgvigil/internal/redact"
)

// errorMessage is the text printed for a failed command: known secrets and passwords written
// into connection strings masked (internal/redact).
func errorMessage(cmd *cobra.Command, err error, env []string) string {
	return redact.New(knownSecrets(cmd, env)...).Message(err)
}

// knownSecrets are the passwords a failed command may have had in hand, so that its error
// message can be masked before it is printed: those of the configuration it was given (node or
// proxy, read again here because the command's own copy is gone), and those in the
// environment. Passwords written into connection strings are masked by pattern in any case.
func knownSecrets(cmd *cobra.Command, env []string) []string {
	var out []string
	for _, kv := range env {
		name, v, _ := strings.Cut(kv, "=")
		upper := strings.ToUpper(name)
		if v != "" && (upper == "PGPASSWORD" || ((strings.HasPrefix(upper, "PGVIGIL_") || strings.HasPrefix(upper, "PATRONI_")) &&
			(strings.Contains(upper, "PASSWORD") || strings.Contains(upper, "SECRET") || strings.Contains(upper, "KEY")))) {
			out = append(out, v)
		}
	}
	if cmd == nil {
		return out
	}
	file := ""
	if f := cmd.Flags().Lookup("config"); f != nil {
		file = f.Value.String()
	}
	if file == "" {
		return out
	}
	if cmd.Name() == "proxy" {
		p, err := config.LoadProxy(file)
		if err != nil {
			return out
		}
		out = append(out, p.Secrets()...)
		if p.Auth.File != "" {
			if u, err := proxy.LoadUserlist(p.Auth.File); err == nil {
				out = append(out, u.Passwords()...)
			}
		}
		return out
	}
	if c, err := config.Load(file, env, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil {
		out = append(out, c.Secrets()...)
	}
	return out
}
