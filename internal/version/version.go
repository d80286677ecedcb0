// Package version carries the build's version and commit, set with -ldflags -X at build time.
package version

// Set by the Makefile: -X github.com/pgvigil/pgvigil/internal/version.Version=... and .Commit=...
var (
	Version = "0.1.0-dev"
	Commit  = "unknown"
)
