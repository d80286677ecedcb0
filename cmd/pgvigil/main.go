// Command pgvigil is the PostgreSQL high-availability manager: node agent, demo and benchmarks.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/pgvigil/pgvigil/internal/config"
	"github.com/pgvigil/pgvigil/internal/node"
	"github.com/pgvigil/pgvigil/internal/version"
	"github.com/pgvigil/pgvigil/internal/watchdog"
)

func main() {
	root := &cobra.Command{
		Use:           "pgvigil",
		Short:         "PostgreSQL high availability: node agent, store on etcd, REST API",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(versionCmd(), nodeCmd(), demoCmd(), benchCmd(), watchdogCmd(), certsCmd(), proxyCmd())
	root.AddCommand(cliCommands()...)
	root.AddCommand(backupCommands()...)
	if cmd, err := root.ExecuteC(); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", errorMessage(cmd, err, os.Environ()))
		os.Exit(1)
	}
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, Go version and commit",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "pgvigil %s (commit %s, %s %s/%s)\n",
				version.Version, version.Commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		},
	}
}

func newLogger(level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

func nodeCmd() *cobra.Command {
	var file, level string
	var validate bool
	cmd := &cobra.Command{
		Use:   "node -c FILE",
		Short: "Run the node agent: owns the local PostgreSQL, takes part in leader election, serves the REST API",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := newLogger(level)
			cfg, err := config.Load(file, os.Environ(), log)
			if err != nil {
				return fmt.Errorf("invalid configuration:\n%w", err)
			}
			if validate {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: configuration is valid (member %s, scope %s, PostgreSQL %d in %s)\n",
					file, cfg.Name, cfg.Scope, cfg.Postgres.Version, cfg.Postgres.BinDir)
				return nil
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return node.Run(ctx, cfg, log)
		},
	}
	cmd.Flags().StringVarP(&file, "config", "c", "", "configuration file (Patroni YAML keys)")
	cmd.Flags().BoolVar(&validate, "validate", false, "check the configuration and exit")
	cmd.Flags().StringVar(&level, "log-level", "info", "debug, info, warn or error")
	return cmd
}

// watchdogCmd is the fencing process the node agent starts for itself; not for operators.
func watchdogCmd() *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:    "watchdog --data-dir DIR",
		Short:  "Fencing watchdog started by the node agent (reads heartbeats on stdin)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Only SIGTERM ends it without fencing; SIGINT from a terminal is the agent's business.
			signal.Ignore(syscall.SIGINT, syscall.SIGHUP)
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
			defer stop()
			return watchdog.Run(ctx, os.Stdin, dataDir, newLogger("info").With("component", "watchdog"))
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "PostgreSQL data directory to fence")
	_ = cmd.MarkFlagRequired("data-dir")
	return cmd
}
