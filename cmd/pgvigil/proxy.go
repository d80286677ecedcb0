package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgvigil/pgvigil/internal/bench"
	"github.com/pgvigil/pgvigil/internal/config"
	"github.com/pgvigil/pgvigil/internal/proxy"
)

func proxyCmd() *cobra.Command {
	var file, level string
	var validate bool
	cmd := &cobra.Command{
		Use:   "proxy -c FILE",
		Short: "Run the leader-aware PostgreSQL router and pooler in front of the cluster",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := newLogger(level).With("component", "proxy")
			cfg, err := config.LoadProxy(file)
			if err != nil {
				return fmt.Errorf("invalid proxy configuration:\n%w", err)
			}
			if validate {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: proxy configuration is valid (scope %s, read-write on %s, %s pooling)\n",
					file, cfg.Scope, cfg.Listen.ReadWrite, cfg.PoolMode)
				return nil
			}
			if cfg.Threads > 0 {
				runtime.GOMAXPROCS(cfg.Threads)
			}
			p, err := proxy.New(cfg, log)
			if err != nil {
				return err
			}
			store, err := proxy.OpenStore(cfg, log)
			if err != nil {
				return err
			}
			defer store.Close()
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			go func() {
				for range hup {
					if err := p.ReloadTLS(); err != nil {
						log.Error("certificate reload failed; keeping the previous one", "err", err)
					} else {
						log.Info("certificate reloaded")
					}
				}
			}()
			return p.Run(ctx, store)
		},
	}
	cmd.Flags().StringVarP(&file, "config", "c", "", "proxy configuration file")
	cmd.Flags().BoolVar(&validate, "validate", false, "check the configuration and exit")
	cmd.Flags().StringVar(&level, "log-level", "info", "debug, info, warn or error")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}

// benchProxyCmd is `pgvigil bench proxy`.
func benchProxyCmd() *cobra.Command {
	o := bench.ProxyOptions{}
	cmd := &cobra.Command{
		Use:   "proxy",
		Short: "pgbench select-only and TPC-B-like through PostgreSQL directly, PgBouncer and pgvigil proxy; memory per idle client",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBench(cmd, checkFlags(o.Clients < 1 || o.PoolSize < 1 || o.Scale < 1 || o.IdleClients < 1, "--clients, --pool-size, --scale and --idle-clients must be at least 1"), func(exe string, out io.Writer) { o.Binary, o.Out = exe, out },
				func(ctx context.Context) error { return bench.Proxy(ctx, o) })
		},
	}
	cmd.Flags().DurationVar(&o.Duration, "duration", 20*time.Second, "length of each pgbench run")
	cmd.Flags().IntVar(&o.Clients, "clients", 50, "pgbench clients")
	cmd.Flags().IntVar(&o.Rounds, "rounds", 4, "interleaved rounds the duration is split into")
	cmd.Flags().IntVar(&o.Scale, "scale", 5, "pgbench scale factor")
	cmd.Flags().IntVar(&o.PoolSize, "pool-size", 20, "server connections per pool, for PgBouncer and the proxy alike")
	cmd.Flags().IntVar(&o.IdleClients, "idle-clients", 1000, "idle client connections for the memory figure")
	cmd.Flags().StringVar(&o.Dir, "dir", "", "working directory (default: a new temporary directory)")
	cmd.Flags().DurationVar(&o.Timeout, "timeout", 2*time.Minute, "give up on cluster start after this long")
	return cmd
}
