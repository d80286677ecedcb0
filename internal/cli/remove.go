package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/spf13/cobra"

	"github.com/pgvigil/pgvigil/internal/dcs"
)

func removeCmd(a *App) *cobra.Command {
	var g globalOpts
	var aware bool
	cmd := &cobra.Command{
		Use:   "remove SCOPE",
		Short: "Delete every key of the cluster from the store (stop its agents first)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			scope := args[0]
			s, err := g.open(a, scope)
			if err != nil {
				return err
			}
			defer s.Close()
			v, err := s.view()
			if err != nil {
				return err
			}
			if len(v.Members) > 0 || v.Leader != nil {
				_ = s.printMembers(v, false, false, "table")
			}
			if v.Leader != nil {
				a.warnf("cluster %s has a leader (%s); running agents write their keys again, stop them first", scope, v.Leader.Name)
			}
			if !aware {
				if !a.InTTY {
					return errors.New("refusing to remove a cluster without confirmation: standard input is not a terminal (use --yes-i-am-aware)")
				}
				name, err := a.prompt("Please confirm the cluster name to remove", "")
				if err != nil {
					return err
				}
				if name != scope {
					return errors.New("Cluster names specified do not match")
				}
				ans, err := a.prompt(fmt.Sprintf("You are about to remove all information in the store for %s, please type: \"Yes I am aware\"", scope), "")
				if err != nil {
					return err
				}
				if ans != "Yes I am aware" {
					return errors.New("You did not exactly type \"Yes I am aware\"")
				}
			}
			n, err := deletePrefix(s.ctx, s.t)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.Out, "Success: removed %d keys of cluster %s\n", n, scope)
			return nil
		},
	}
	g.register(cmd)
	cmd.Flags().BoolVar(&aware, "yes-i-am-aware", false, "do not ask (for scripts)")
	return cmd
}

// deletePrefix removes <namespace>/<scope>/ in one request. The Store interface has no such
// operation (an agent never needs it), so this talks to etcd directly.
func deletePrefix(ctx context.Context, t *Target) (int64, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: t.Endpoints, Username: t.Username, Password: t.Password,
		DialTimeout: 3 * time.Second, Logger: zap.NewNop(),
	})
	if err != nil {
		return 0, fmt.Errorf("cannot connect to etcd: %w", err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := cli.Delete(ctx, dcs.Prefix(t.Namespace, t.Scope), clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("cannot delete the keys of %s: %w", t.Scope, err)
	}
	return resp.Deleted, nil
}
