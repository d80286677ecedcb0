package cli

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgvigil/pgvigil/internal/cluster"
)

// selectMembers picks the members an action applies to: the named ones (all when none is
// named), filtered by role (primary: the leader key's holder; replica: the others).
func selectMembers(v *cluster.View, scope string, names []string, role string) ([]cluster.Member, error) {
	switch role {
	case "", "any":
	case "primary", "leader", "master":
		role = "primary"
	case "replica", "standby":
		role = "replica"
	default:
		return nil, fmt.Errorf("--role: want primary, replica or any, got %q", role)
	}
	for _, n := range names {
		if _, ok := v.Member(n); !ok {
			return nil, fmt.Errorf("%s is not a member of cluster %s", n, scope)
		}
	}
	var out []cluster.Member
	for _, m := range v.Members {
		if len(names) > 0 && !slices.Contains(names, m.Name) {
			continue
		}
		isLeader := v.Leader != nil && v.Leader.Name == m.Name
		if (role == "primary" && !isLeader) || (role == "replica" && isLeader) {
			continue
		}
		out = append(out, m)
	}
	if len(out) == 0 {
		if role != "" && role != "any" {
			return nil, fmt.Errorf("No %s among the given members of cluster %s", role, scope)
		}
		return nil, fmt.Errorf("%s cluster doesn't have any members", scope)
	}
	return out, nil
}

func memberNames(ms []cluster.Member) string {
	var n []string
	for _, m := range ms {
		n = append(n, m.Name)
	}
	return strings.Join(n, ", ")
}

// memberCompletion offers member names, read from the store with the flags given so far.
func memberCompletion(a *App, g *globalOpts) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		s, err := g.open(a, "")
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		defer s.Close()
		v, err := s.view()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []string
		for _, m := range v.Members {
			if !slices.Contains(args, m.Name) {
				out = append(out, m.Name)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

func restartCmd(a *App) *cobra.Command {
	var g globalOpts
	var role, scheduled, pgVersion string
	var pending, force bool
	var timeout int
	cmd := &cobra.Command{
		Use:   "restart [MEMBER...]",
		Short: "Restart PostgreSQL on members (all by default), now or at --scheduled",
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withMembers(a, args, role, func(s *session, v *cluster.View, ms []cluster.Member) error {
				at, err := parseScheduled(scheduled)
				if err != nil {
					return err
				}
				if at != nil && v.Config.Pause {
					return errors.New("Can't schedule restart in the paused state")
				}
				body := map[string]any{}
				if at != nil {
					body["schedule"] = at.Format(time.RFC3339Nano)
				}
				if pending {
					body["restart_pending"] = true
				}
				if pgVersion != "" {
					body["postgres_version"] = pgVersion
				}
				if timeout > 0 {
					body["timeout"] = timeout
				}
				if pending && at == nil {
					// Members with nothing pending would answer "restart conditions are not satisfied".
					var keep []cluster.Member
					for _, m := range ms {
						if m.PendingRestart {
							keep = append(keep, m)
						} else {
							fmt.Fprintf(a.Out, "Skipped: no restart pending on member %s\n", m.Name)
						}
					}
					if ms = keep; len(ms) == 0 {
						return nil
					}
				}
				if !force {
					_ = s.printMembers(v, false, false, "table")
					q := fmt.Sprintf("Are you sure you want to restart members %s?", memberNames(ms))
					if at != nil {
						q = fmt.Sprintf("Are you sure you want to schedule restart of members %s at %s?", memberNames(ms), at.Format(time.RFC3339))
					}
					if err := a.confirm("restart", q); err != nil {
						return err
					}
				}
				wait := 3 * time.Minute
				if timeout > 0 {
					wait = time.Duration(timeout)*time.Second + 30*time.Second
				}
				failed := 0
				for _, m := range ms {
					r, err := s.rest.call(s.ctx, m, http.MethodPost, "/restart", body, wait)
					switch {
					case err != nil:
						fmt.Fprintf(a.Err, "Failed: restart for member %s: %v\n", m.Name, err)
						failed++
					case r.Code == http.StatusOK:
						fmt.Fprintf(a.Out, "Success: restart on member %s\n", m.Name)
					case r.Code == http.StatusAccepted:
						fmt.Fprintf(a.Out, "Success: restart scheduled on member %s\n", m.Name)
					case r.Code == http.StatusConflict:
						fmt.Fprintf(a.Err, "Failed: another restart is already scheduled on member %s\n", m.Name)
						failed++
					default:
						fmt.Fprintf(a.Err, "Failed: restart for member %s, status code=%d, (%s)\n", m.Name, r.Code, r.Body)
						failed++
					}
				}
				if failed > 0 {
					return fmt.Errorf("restart failed on %d of %d members", failed, len(ms))
				}
				return nil
			})
		},
		ValidArgsFunction: memberCompletion(a, &g),
	}
	g.register(cmd)
	f := cmd.Flags()
	f.StringVarP(&role, "role", "r", "", "only members with this role: primary, replica or any")
	f.StringVar(&scheduled, "scheduled", "", "when: ISO 8601 time (local time without a zone), or now")
	f.StringVar(&pgVersion, "pg-version", "", "only restart members running a PostgreSQL older than this (e.g. 15.8)")
	f.BoolVar(&pending, "pending", false, "only restart members with a pending restart")
	f.IntVar(&timeout, "timeout", 0, "give up a restart after SECONDS (default: the server's, 2 minutes)")
	f.BoolVar(&force, "force", false, "do not ask for confirmation")
	return cmd
}

func reloadCmd(a *App) *cobra.Command {
	var g globalOpts
	var role string
	var force bool
	cmd := &cobra.Command{
		Use:   "reload [MEMBER...]",
		Short: "Reload PostgreSQL's configuration on members (all by default)",
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withMembers(a, args, role, func(s *session, v *cluster.View, ms []cluster.Member) error {
				if !force {
					_ = s.printMembers(v, false, false, "table")
					if err := a.confirm("reload", fmt.Sprintf("Are you sure you want to reload members %s?", memberNames(ms))); err != nil {
						return err
					}
				}
				failed := 0
				for _, m := range ms {
					r, err := s.rest.call(s.ctx, m, http.MethodPost, "/reload", nil, 10*time.Second)
					switch {
					case err != nil:
						fmt.Fprintf(a.Err, "Failed: reload for member %s: %v\n", m.Name, err)
						failed++
					case r.ok():
						fmt.Fprintf(a.Out, "Reload request received for member %s and will be processed within %d seconds\n",
							m.Name, v.Config.LoopWait)
					default:
						fmt.Fprintf(a.Err, "Failed: reload for member %s, status code=%d, (%s)\n", m.Name, r.Code, r.Body)
						failed++
					}
				}
				if failed > 0 {
					return fmt.Errorf("reload failed on %d of %d members", failed, len(ms))
				}
				return nil
			})
		},
		ValidArgsFunction: memberCompletion(a, &g),
	}
	g.register(cmd)
	cmd.Flags().StringVarP(&role, "role", "r", "", "only members with this role: primary, replica or any")
	cmd.Flags().BoolVar(&force, "force", false, "do not ask for confirmation")
	return cmd
}

func reinitCmd(a *App) *cobra.Command {
	var g globalOpts
	var force, wait bool
	var waitFor int
	cmd := &cobra.Command{
		Use:   "reinit MEMBER...",
		Short: "Wipe a replica's data directory and clone it again from the leader",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withMembers(a, args, "", func(s *session, v *cluster.View, ms []cluster.Member) error {
				if !force {
					_ = s.printMembers(v, false, false, "table")
					if err := a.confirm("reinitialize", fmt.Sprintf("Are you sure you want to reinitialize members %s?", memberNames(ms))); err != nil {
						return err
					}
				}
				failed := 0
				started := map[string]string{} // member → postmaster_start_time before
				for _, m := range ms {
					before := ""
					if st, err := s.rest.status(s.ctx, m); err == nil {
						before, _ = st["postmaster_start_time"].(string)
					}
					r, err := s.rest.call(s.ctx, m, http.MethodPost, "/reinitialize", map[string]any{}, time.Minute)
					switch {
					case err != nil:
						fmt.Fprintf(a.Err, "Failed: reinitialize for member %s: %v\n", m.Name, err)
						failed++
					case r.ok():
						fmt.Fprintf(a.Out, "Success: reinitialize for member %s\n", m.Name)
						started[m.Name] = before
					default:
						fmt.Fprintf(a.Err, "Failed: reinitialize for member %s, status code=%d, (%s)\n", m.Name, r.Code, r.Body)
						failed++
					}
				}
				if wait && len(started) > 0 {
					if err := s.waitReinit(ms, started, time.Duration(waitFor)*time.Second); err != nil {
						return err
					}
				}
				if failed > 0 {
					return fmt.Errorf("reinitialize failed on %d of %d members", failed, len(ms))
				}
				return nil
			})
		},
		ValidArgsFunction: memberCompletion(a, &g),
	}
	g.register(cmd)
	cmd.Flags().BoolVar(&force, "force", false, "do not ask for confirmation")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the members run again")
	cmd.Flags().IntVar(&waitFor, "wait-timeout", 3600, "with --wait, give up after SECONDS")
	return cmd
}

// waitReinit polls GET /patroni until each member runs a PostgreSQL started after the request.
func (s *session) waitReinit(ms []cluster.Member, started map[string]string, limit time.Duration) error {
	var names []string
	for _, m := range ms {
		if _, ok := started[m.Name]; ok {
			names = append(names, m.Name)
		}
	}
	fmt.Fprintf(s.a.Out, "Waiting for reinitialize to complete on: %s\n", strings.Join(names, ", "))
	deadline := time.Now().Add(limit)
	for len(started) > 0 {
		for _, m := range ms {
			before, ok := started[m.Name]
			if !ok {
				continue
			}
			st, err := s.rest.status(s.ctx, m)
			if err != nil {
				continue
			}
			state, _ := st["state"].(string)
			now, _ := st["postmaster_start_time"].(string)
			if state == cluster.StateRunning && now != "" && now != before && s.memberRunning(m.Name) {
				fmt.Fprintf(s.a.Out, "Reinitialize is completed on: %s\n", m.Name)
				delete(started, m.Name)
			}
		}
		if len(started) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("reinitialize not completed after %s on: %s", limit, strings.Join(mapKeys(started), ", "))
		}
		select {
		case <-s.ctx.Done():
			return s.ctx.Err()
		case <-time.After(time.Second):
		}
	}
	return nil
}

// memberRunning: the member key (what list shows) says running too.
func (s *session) memberRunning(name string) bool {
	v, err := s.view()
	if err != nil {
		return false
	}
	m, ok := v.Member(name)
	return ok && m.State == cluster.StateRunning
}

func mapKeys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func pauseCmd(a *App, pause bool) *cobra.Command {
	var g globalOpts
	var wait bool
	use, short := "pause [SCOPE]", "Maintenance mode: agents take no automatic action (no failover, no restart)"
	if !pause {
		use, short = "resume [SCOPE]", "Leave maintenance mode: automatic failover and restarts again"
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.with(a, args, func(s *session) error {
				return s.togglePause(pause, wait)
			})
		},
	}
	g.register(cmd)
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until every member has seen it")
	return cmd
}

func (s *session) togglePause(pause, wait bool) error {
	v, err := s.view()
	if err != nil {
		return err
	}
	if v.Config.Pause == pause {
		if pause {
			return errors.New("Cluster is already paused")
		}
		return errors.New("Cluster is not paused")
	}
	word, verb := "paused", "pause"
	var body map[string]any
	if pause {
		body = map[string]any{"pause": true}
	} else {
		word, verb = "resumed", "resume"
		body = map[string]any{"pause": nil}
	}
	var lastErr error
	sent := false
	for _, m := range leaderFirst(v) {
		r, err := s.rest.call(s.ctx, m, http.MethodPatch, "/config", body, 10*time.Second)
		if err != nil {
			fmt.Fprintf(s.a.Err, "Warning: %v\n", err)
			lastErr = err
			continue
		}
		if r.Code != http.StatusOK {
			return fmt.Errorf("Failed: %s cluster management status code=%d, (%s)", verb, r.Code, r.Body)
		}
		sent = true
		break
	}
	if !sent {
		if lastErr == nil {
			lastErr = errors.New("no member publishes a REST API")
		}
		return fmt.Errorf("Can not find accessible cluster member: %w", lastErr)
	}
	if wait {
		fmt.Fprintf(s.a.Out, "'%s' request sent, waiting until it is recognized by all nodes\n", verb)
		limit := max(15*time.Second, 3*v.Config.LoopDuration()+5*time.Second)
		deadline := time.Now().Add(limit)
		for {
			var pendingNames []string
			for _, m := range v.Members {
				st, err := s.rest.status(s.ctx, m)
				if err != nil {
					pendingNames = append(pendingNames, m.Name)
					continue
				}
				p, _ := st["pause"].(bool)
				if p != pause {
					pendingNames = append(pendingNames, m.Name)
				}
			}
			if len(pendingNames) == 0 {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s did not recognize the %s state within %s", strings.Join(pendingNames, ", "), verb, limit)
			}
			select {
			case <-s.ctx.Done():
				return s.ctx.Err()
			case <-time.After(250 * time.Millisecond):
			}
		}
	}
	fmt.Fprintf(s.a.Out, "Success: cluster management is %s\n", word)
	return nil
}
