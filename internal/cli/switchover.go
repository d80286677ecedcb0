package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgvigil/pgvigil/internal/cluster"
)

// switchoverPlan is what the operator asked for, after prompts.
type switchoverPlan struct {
	failover  bool
	leader    string
	candidate string
	at        *time.Time
}

func (p switchoverPlan) action() string {
	if p.failover {
		return "failover"
	}
	return "switchover"
}

// syncMode reports whether the stored config turns synchronous replication on (Patroni spells it
// true, "on" or "quorum"). It reads the raw key so that it does not depend on how the typed
// config models the setting.
func syncMode(raw []byte) bool {
	var c struct {
		SyncMode any `json:"synchronous_mode"`
	}
	if json.Unmarshal(raw, &c) != nil {
		return false
	}
	switch x := c.SyncMode.(type) {
	case bool:
		return x
	case string:
		x = strings.ToLower(x)
		return x == "on" || x == "true" || x == "quorum"
	}
	return false
}

// eligible: the tags allow the member to be promoted.
func eligible(m cluster.Member) bool { return !m.Tags.NoFailover && m.Tags.FailoverPriority > 0 }

// checkSwitchover applies patronictl's client-side checks, with its texts, plus the health
// checks the leader would make (candidate running and within maximum_lag_on_failover of the
// leader's last optime, sync standby in synchronous mode), so that a refusal is explained
// before anything is written.
func checkSwitchover(v *cluster.View, scope string, p switchoverPlan) error {
	leader := ""
	if v.Leader != nil {
		leader = v.Leader.Name
	}
	if p.failover {
		if p.candidate == "" {
			return errors.New("Failover could be performed only to a specific candidate")
		}
	} else {
		if leader == "" {
			return errors.New("This cluster has no leader")
		}
		if p.leader != leader {
			return fmt.Errorf("Member %s is not the leader of cluster %s", p.leader, scope)
		}
	}
	candidates := 0
	for _, m := range v.Members {
		if m.Name != leader && eligible(m) {
			candidates++
		}
	}
	if candidates == 0 {
		return fmt.Errorf("No candidates found to %s to", p.action())
	}
	if p.candidate != "" {
		if p.candidate == leader {
			if p.failover {
				return fmt.Errorf("Member %s is already the leader of cluster %s", p.candidate, scope)
			}
			return errors.New("Switchover target and source are the same.")
		}
		m, ok := v.Member(p.candidate)
		if !ok {
			return fmt.Errorf("Member %s does not exist in cluster %s", p.candidate, scope)
		}
		if !eligible(m) {
			return fmt.Errorf("Member %s does not exist in cluster %s or is tagged as nofailover", p.candidate, scope)
		}
	}
	if v.Config.Pause && !p.failover {
		if p.at != nil {
			return errors.New("Can't schedule switchover in the paused state")
		}
		if p.candidate == "" {
			return errors.New("Switchover is possible only to a specific candidate in a paused state")
		}
	}
	if p.candidate == "" || p.at != nil {
		return nil // the leader picks, or checks when the scheduled time comes
	}
	m, _ := v.Member(p.candidate)
	if m.State != cluster.StateRunning {
		return fmt.Errorf("Member %s is not running (state: %s)", m.Name, m.State)
	}
	if !p.failover {
		if m.XLogLocation == nil {
			return fmt.Errorf("Member %s has not reported its WAL position; its lag is unknown", m.Name)
		}
		lag := v.Status.Optime - *m.XLogLocation
		if lag > v.Config.MaximumLagOnFailover {
			return fmt.Errorf("Member %s is %d bytes behind the leader, more than maximum_lag_on_failover (%d)",
				m.Name, lag, v.Config.MaximumLagOnFailover)
		}
		if syncMode(v.ConfigRaw) && v.Sync != nil && !v.IsSyncStandby(m.Name) {
			return errors.New("candidate name does not match with sync_standby")
		}
	}
	return nil
}

// parseScheduled reads --scheduled: "" or "now" is immediate; a time without a zone is local
// time, as patronictl reads it.
func parseScheduled(s string) (*time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" || strings.EqualFold(s, "now") {
		return nil, nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02T15:04Z07:00", "2006-01-02 15:04Z07:00"} {
		if t, err := time.Parse(layout, s); err == nil {
			return &t, nil
		}
	}
	for _, layout := range []string{"2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05.999999999", "2006-01-02T15:04", "2006-01-02 15:04"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return &t, nil
		}
	}
	return nil, fmt.Errorf("Unable to parse scheduled timestamp (%s). It should be in an unambiguous format (e.g. ISO 8601)", s)
}

// switchoverWait bounds the REST call: the leader answers within max(30 s, 2×ttl).
func switchoverWait(v *cluster.View) time.Duration {
	return max(30*time.Second, 2*v.Config.TTLDuration()) + 15*time.Second
}

func switchoverCmd(a *App) *cobra.Command {
	var g globalOpts
	var p switchoverPlan
	var scheduled string
	var force, cancel bool
	cmd := &cobra.Command{
		Use:   "switchover [SCOPE]",
		Short: "Hand the leader role to a replica, losing nothing (now, or at --scheduled)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.with(a, args, func(s *session) error {
				if cancel {
					return s.cancelSwitchover()
				}
				return s.switchover(p, scheduled, cmd.Flags().Changed("scheduled"), force)
			})
		},
	}
	g.register(cmd)
	f := cmd.Flags()
	f.StringVar(&p.leader, "leader", "", "the current leader (default: the leader key's holder)")
	f.StringVar(&p.leader, "primary", "", "alias of --leader")
	f.StringVar(&p.candidate, "candidate", "", "the member to promote (default: the leader picks the best)")
	f.StringVar(&scheduled, "scheduled", "", "when: ISO 8601 time (local time without a zone), or now")
	f.BoolVar(&force, "force", false, "do not ask for confirmation")
	f.BoolVar(&cancel, "cancel", false, "cancel the scheduled switchover")
	_ = f.MarkHidden("primary")
	return cmd
}

func (s *session) topology(v *cluster.View) {
	fmt.Fprintln(s.a.Out, "Current cluster topology")
	_ = s.printMembers(v, false, false, "table")
}

func (s *session) switchover(p switchoverPlan, scheduled string, scheduledGiven, force bool) error {
	a := s.a
	v, err := s.view()
	if err != nil {
		return err
	}
	s.topology(v)
	leader := ""
	if v.Leader != nil {
		leader = v.Leader.Name
	}
	ask := !force && a.InTTY
	if p.leader == "" {
		p.leader = leader
		if ask && leader != "" {
			if p.leader, err = a.prompt("Primary", leader); err != nil {
				return err
			}
		}
	}
	if p.candidate == "" && ask {
		var names []string
		for _, m := range v.Members {
			if m.Name != leader && eligible(m) {
				names = append(names, m.Name)
			}
		}
		if p.candidate, err = a.prompt(fmt.Sprintf("Candidate %v (empty: the leader picks)", names), ""); err != nil {
			return err
		}
	}
	if !scheduledGiven && ask {
		example := a.now().Add(time.Hour).Format("2006-01-02T15:04")
		if scheduled, err = a.prompt("When should the switchover take place (e.g. "+example+")", "now"); err != nil {
			return err
		}
	}
	if p.at, err = parseScheduled(scheduled); err != nil {
		return err
	}
	if err := checkSwitchover(v, s.t.Scope, p); err != nil {
		return err
	}
	if !force {
		q := fmt.Sprintf("Are you sure you want to switchover cluster %s, demoting current leader %s?", s.t.Scope, leader)
		if p.at != nil {
			q = fmt.Sprintf("Are you sure you want to schedule switchover of cluster %s at %s, demoting current leader %s?",
				s.t.Scope, p.at.Format(time.RFC3339), leader)
		}
		if err := a.confirm("switchover", q); err != nil {
			return err
		}
	}
	body := map[string]any{"leader": p.leader}
	if p.candidate != "" {
		body["candidate"] = p.candidate
	}
	if p.at != nil {
		body["scheduled_at"] = p.at.Format(time.RFC3339Nano)
	}
	lm, _ := v.LeaderMember()
	if lm.Name == "" {
		return fmt.Errorf("the leader %s has no member key; cannot reach its REST API", leader)
	}
	r, err := s.rest.call(s.ctx, lm, http.MethodPost, "/switchover", body, switchoverWait(v))
	if err != nil {
		return err
	}
	if !r.ok() {
		return fmt.Errorf("Switchover failed, details: %d, %s", r.Code, r.Body)
	}
	fmt.Fprintf(a.Out, "%s %s\n", a.timestamp(), r.Body)
	if nv, err := s.view(); err == nil {
		_ = s.printMembers(nv, false, false, "table")
	}
	return nil
}

// cancelSwitchover deletes a scheduled switchover through the first member that answers,
// the leader first.
func (s *session) cancelSwitchover() error {
	v, err := s.view()
	if err != nil {
		return err
	}
	if v.Failover == nil || v.Failover.ScheduledAt == nil {
		fmt.Fprintln(s.a.Out, "No pending scheduled switchover")
		return nil
	}
	var lastErr error
	for _, m := range leaderFirst(v) {
		r, err := s.rest.call(s.ctx, m, http.MethodDelete, "/switchover", nil, 10*time.Second)
		if err != nil {
			fmt.Fprintf(s.a.Err, "Warning: %v\n", err)
			lastErr = err
			continue
		}
		if r.Code == http.StatusOK {
			fmt.Fprintf(s.a.Out, "Success: %s\n", r.Body)
			return nil
		}
		return fmt.Errorf("cancelling the switchover failed, details: %d, %s", r.Code, r.Body)
	}
	if lastErr == nil {
		lastErr = errors.New("no member publishes a REST API")
	}
	return fmt.Errorf("Could not find any accessible member of cluster %s: %w", s.t.Scope, lastErr)
}

func failoverCmd(a *App) *cobra.Command {
	var g globalOpts
	var candidate string
	var force bool
	cmd := &cobra.Command{
		Use:   "failover [SCOPE]",
		Short: "Promote a named replica now, without the switchover's hand-over (may lose data)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.with(a, args, func(s *session) error {
				return s.failover(candidate, force)
			})
		},
	}
	g.register(cmd)
	cmd.Flags().StringVar(&candidate, "candidate", "", "the member to promote (required)")
	cmd.Flags().BoolVar(&force, "force", false, "do not ask for confirmation")
	return cmd
}

func (s *session) failover(candidate string, force bool) error {
	a := s.a
	v, err := s.view()
	if err != nil {
		return err
	}
	s.topology(v)
	leader := ""
	if v.Leader != nil {
		leader = v.Leader.Name
	}
	if candidate == "" && !force && a.InTTY {
		var names []string
		for _, m := range v.Members {
			if m.Name != leader && eligible(m) {
				names = append(names, m.Name)
			}
		}
		if candidate, err = a.prompt(fmt.Sprintf("Candidate %v", names), ""); err != nil {
			return err
		}
	}
	p := switchoverPlan{failover: true, candidate: candidate}
	if err := checkSwitchover(v, s.t.Scope, p); err != nil {
		return err
	}
	if leader != "" {
		fmt.Fprintf(a.Out, "A failover promotes %s without the switchover's hand-over: transactions the leader %s committed\n"+
			"that %s has not received are lost. Use switchover for a planned change.\n", candidate, leader, candidate)
	} else {
		fmt.Fprintf(a.Out, "A failover promotes %s: transactions the failed leader committed that %s never received are lost.\n",
			candidate, candidate)
	}
	if syncMode(v.ConfigRaw) && v.Sync != nil && !v.IsSyncStandby(candidate) {
		fmt.Fprintf(a.Out, "%s is not a synchronous standby: transactions already acknowledged to clients may be lost.\n", candidate)
	}
	if !force {
		q := fmt.Sprintf("Are you sure you want to failover cluster %s?", s.t.Scope)
		if leader != "" {
			q = fmt.Sprintf("Are you sure you want to failover cluster %s, demoting current leader %s?", s.t.Scope, leader)
		}
		if err := a.confirm("failover", q); err != nil {
			return err
		}
	}
	// The leader runs the request; without one (or when it does not answer) the candidate does.
	var targets []cluster.Member
	if lm, ok := v.LeaderMember(); ok {
		targets = append(targets, lm)
	}
	if cm, ok := v.Member(candidate); ok {
		targets = append(targets, cm)
	}
	var lastErr error
	for _, m := range targets {
		r, err := s.rest.call(s.ctx, m, http.MethodPost, "/failover", map[string]any{"candidate": candidate}, switchoverWait(v))
		if err != nil {
			fmt.Fprintf(a.Err, "Warning: %v\n", err)
			lastErr = err
			continue
		}
		if !r.ok() {
			return fmt.Errorf("Failover failed, details: %d, %s", r.Code, r.Body)
		}
		fmt.Fprintf(a.Out, "%s %s\n", a.timestamp(), r.Body)
		if nv, err := s.view(); err == nil {
			_ = s.printMembers(nv, false, false, "table")
		}
		return nil
	}
	return fmt.Errorf("Failover failed: %w", lastErr)
}
