package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/pgvigil/pgvigil/internal/cluster"
)

// memberRow is one member as list shows it.
type memberRow struct {
	Name, Host, Role, State string
	TL                      any // int, or "" when unknown
	Lag                     any // MB as int, "unknown", or "" for the leader
	Pending                 string
	Scheduled               string
	Tags                    json.RawMessage // nil when none
	tagsMap                 map[string]any
	leader                  bool
}

// title cases a Patroni role for display: sync_standby → Sync Standby.
func titleRole(r string) string {
	words := strings.Fields(strings.ReplaceAll(r, "_", " "))
	for i, w := range words {
		words[i] = strings.ToUpper(w[:1]) + w[1:]
	}
	return strings.Join(words, " ")
}

// memberRows builds list's rows from the store, as Patroni's cluster_as_json does: the leader
// key's holder is Leader, members in the sync key Sync Standby, replicas show their replication
// state (streaming) and their lag behind the leader's last optime.
func memberRows(v *cluster.View) []memberRow {
	hosts := map[string]int{}
	nonDefaultPort := false
	for _, m := range v.Members {
		h, p := m.HostPort()
		hosts[h]++
		if p != 5432 {
			nonDefaultPort = true
		}
	}
	var rows []memberRow
	for _, m := range v.Members {
		h, p := m.HostPort()
		host := h
		if (nonDefaultPort || hosts[h] > 1) && p != 0 {
			host = h + ":" + strconv.Itoa(p)
		}
		r := memberRow{Name: m.Name, Host: host, State: m.State, TL: ""}
		if m.Timeline > 0 {
			r.TL = m.Timeline
		}
		isLeader := v.Leader != nil && v.Leader.Name == m.Name
		switch {
		case isLeader && m.Role == cluster.RoleStandbyLeader:
			r.Role, r.leader = "Standby Leader", true
		case isLeader:
			r.Role, r.leader = "Leader", true
		case v.IsSyncStandby(m.Name):
			r.Role = "Sync Standby"
		default:
			// replica; or a primary without the key, on its way out: show what it claims
			r.Role = titleRole(m.Role)
		}
		if !isLeader {
			if m.ReplicationState != "" {
				r.State = m.ReplicationState
			}
			if m.XLogLocation == nil {
				r.Lag = "unknown"
			} else {
				lag := max(v.Status.Optime-*m.XLogLocation, 0)
				r.Lag = int64(math.Round(float64(lag) / (1 << 20)))
			}
		} else {
			r.Lag = ""
		}
		if m.PendingRestart {
			r.Pending = "*"
		}
		if tags, err := json.Marshal(m.Tags); err == nil && string(tags) != "{}" {
			r.Tags = tags
			_ = json.Unmarshal(tags, &r.tagsMap)
		}
		rows = append(rows, r)
	}
	return rows
}

// sysidTitle is the table title: " Cluster: demo (7710768649556572578) ".
func sysidTitle(scope string, v *cluster.View) string {
	id := "uninitialized"
	if v.Initialize != nil {
		id = *v.Initialize
		if id == "" {
			id = "initializing"
		}
	}
	return fmt.Sprintf(" Cluster: %s (%s) ", scope, id)
}

// membersTable renders the rows in format; topology orders them as a replication tree.
func (a *App) membersTable(scope string, v *cluster.View, extended, topology bool, format string) *table {
	rows := memberRows(v)
	if topology {
		rows = topologyOrder(rows, v)
	}
	anyPending, anyTags := false, false
	for _, r := range rows {
		anyPending = anyPending || r.Pending != ""
		anyTags = anyTags || r.Tags != nil
	}
	cols := []string{"Cluster", "Member", "Host", "Role", "State", "TL", "Lag in MB"}
	if extended || anyPending {
		cols = append(cols, "Pending restart")
	}
	if extended {
		cols = append(cols, "Scheduled restart")
	}
	if extended || anyTags {
		cols = append(cols, "Tags")
	}
	pretty := format != "json" && format != "yaml" && format != "yml" && format != "tsv"
	t := &table{columns: cols, right: map[string]bool{"TL": true, "Lag in MB": true}, dropEmpty: true}
	for _, r := range rows {
		row := []any{}
		for _, c := range cols {
			switch c {
			case "Cluster":
				row = append(row, scope)
			case "Member":
				row = append(row, r.Name)
			case "Host":
				row = append(row, r.Host)
			case "Role":
				row = append(row, r.Role)
			case "State":
				row = append(row, r.State)
			case "TL":
				row = append(row, r.TL)
			case "Lag in MB":
				row = append(row, r.Lag)
			case "Pending restart":
				row = append(row, r.Pending)
			case "Scheduled restart":
				row = append(row, r.Scheduled)
			case "Tags":
				switch {
				case r.Tags == nil:
					row = append(row, "")
				case pretty:
					// YAML block form in the table, as patronictl prints tags.
					b, _ := yaml.Marshal(r.tagsMap)
					row = append(row, strings.TrimSpace(string(b)))
				default:
					row = append(row, r.Tags)
				}
			}
		}
		t.rows = append(t.rows, row)
	}
	if pretty {
		// The cluster name is in the title, not in a column.
		t.title = sysidTitle(scope, v)
		t.columns = t.columns[1:]
		for i := range t.rows {
			t.rows[i] = t.rows[i][1:]
		}
		if a.color() {
			t.paint = paintMember
		}
	}
	return t
}

func paintMember(col string, v any, s string) string {
	switch col {
	case "Role":
		switch cellText(v) {
		case "Leader", "Standby Leader":
			return ansiBold + ansiGreen + s + ansiReset
		case "Sync Standby":
			return ansiCyan + s + ansiReset
		}
	case "State":
		switch cellText(v) {
		case "running", "streaming":
			return ansiGreen + s + ansiReset
		case "starting", "stopping", "restarting", "creating replica", "in archive recovery":
			return ansiYellow + s + ansiReset
		default:
			return ansiRed + s + ansiReset
		}
	case "Lag in MB":
		if cellText(v) == "unknown" {
			return ansiRed + s + ansiReset
		}
	}
	return s
}

// topologyOrder puts the leader first and each replica under its upstream (tag replicatefrom,
// else the leader), prefixing names with "+ " per level as patronictl does.
func topologyOrder(rows []memberRow, v *cluster.View) []memberRow {
	byName := map[string]int{}
	for i, r := range rows {
		byName[r.Name] = i
	}
	leader := ""
	for _, r := range rows {
		if r.leader {
			leader = r.Name
		}
	}
	children := map[string][]int{}
	for i, r := range rows {
		if r.leader {
			continue
		}
		parent := leader
		if m, ok := v.Member(r.Name); ok {
			if p, ok := m.Tags.Extra["replicatefrom"].(string); ok && p != r.Name {
				if j, ok := byName[p]; ok && !rows[j].leader {
					parent = p
				}
			}
		}
		children[parent] = append(children[parent], i)
	}
	var out []memberRow
	seen := map[int]bool{}
	var walk func(i, level int)
	walk = func(i, level int) {
		if seen[i] {
			return
		}
		seen[i] = true
		r := rows[i]
		if level > 0 {
			r.Name = strings.Repeat(" ", (level-1)*2) + "+ " + r.Name
		}
		out = append(out, r)
		for _, c := range children[rows[i].Name] {
			walk(c, level+1)
		}
	}
	if j, ok := byName[leader]; ok {
		walk(j, 0)
	} else {
		// No leader: everyone hangs off the missing one.
		for _, c := range children[leader] {
			walk(c, 1)
		}
	}
	// Members in a replicatefrom cycle are still shown.
	for i := range rows {
		if !seen[i] {
			walk(i, 1)
		}
	}
	return out
}

// serviceLines follow the pretty table: maintenance mode, a scheduled switchover, the verdict.
func (a *App) serviceLines(w io.Writer, v *cluster.View, verdict string) {
	col := a.color()
	if v.Config.Pause {
		fmt.Fprintln(w, " "+paintText(col, ansiYellow, "Maintenance mode: on"))
	}
	if f := v.Failover; f != nil && f.ScheduledAt != nil {
		fmt.Fprintf(w, " Switchover scheduled at: %s\n", f.ScheduledAt.Format("2006-01-02T15:04:05.000000-07:00"))
		if f.Leader != "" {
			fmt.Fprintf(w, "%24s: %s\n", "from", f.Leader)
		}
		if f.Member != "" {
			fmt.Fprintf(w, "%24s: %s\n", "to", f.Member)
		}
	}
	if verdict != "" {
		fmt.Fprintf(w, " Last verdict of %s: %s\n", v.Leader.Name, verdict)
	}
}

// leaderVerdict asks the leader for its last HA decision ("" when unknown or unreachable).
func (s *session) leaderVerdict(v *cluster.View) string {
	m, ok := v.LeaderMember()
	if !ok {
		return ""
	}
	st, err := s.rest.status(s.ctx, m)
	if err != nil {
		return ""
	}
	verdict, _ := st["verdict"].(string)
	return verdict
}

// printMembers prints the cluster as list/topology do.
func (s *session) printMembers(v *cluster.View, extended, topology bool, format string) error {
	t := s.a.membersTable(s.t.Scope, v, extended, topology, format)
	if err := t.write(s.a.Out, format); err != nil {
		return err
	}
	if t.title != "" {
		s.a.serviceLines(s.a.Out, v, s.leaderVerdict(v))
	}
	return nil
}

// watchLoop runs draw every interval until interrupted; on a terminal each round clears the
// screen first, elsewhere rounds follow one another.
func (a *App) watchLoop(interval time.Duration, draw func() error) error {
	if interval <= 0 {
		return draw()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	for first := true; ; first = false {
		if a.OutTTY {
			fmt.Fprint(a.Out, "\x1b[H\x1b[2J")
		} else if !first {
			fmt.Fprintln(a.Out)
		}
		if err := draw(); err != nil {
			fmt.Fprintln(a.Err, "Error:", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}

func listCmd(a *App) *cobra.Command {
	var g globalOpts
	var format string
	var extended bool
	var watch int
	cmd := &cobra.Command{
		Use:   "list [SCOPE]",
		Short: "List the members of the cluster: role, state, timeline, lag",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runList(a, &g, args, format, extended, false, watch)
		},
	}
	g.register(cmd)
	cmd.Flags().StringVarP(&format, "format", "f", "table", "output format: table, json, yaml or tsv")
	cmd.Flags().BoolVarP(&extended, "extended", "e", false, "also show pending restart, scheduled restart and tags")
	cmd.Flags().IntVarP(&watch, "watch", "W", 0, "redraw every SECONDS until interrupted")
	return cmd
}

func topologyCmd(a *App) *cobra.Command {
	var g globalOpts
	var watch int
	cmd := &cobra.Command{
		Use:   "topology [SCOPE]",
		Short: "Show the replication tree: the leader first, replicas under it",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runList(a, &g, args, "table", false, true, watch)
		},
	}
	g.register(cmd)
	cmd.Flags().IntVarP(&watch, "watch", "W", 0, "redraw every SECONDS until interrupted")
	return cmd
}

func runList(a *App, g *globalOpts, args []string, format string, extended, topology bool, watch int) error {
	if err := checkFormat(format, tableFormats...); err != nil {
		return err
	}
	if watch < 0 {
		return errors.New("--watch: must not be negative")
	}
	return g.with(a, args, func(s *session) error {
		return a.watchLoop(time.Duration(watch)*time.Second, func() error {
			v, err := s.view()
			if err != nil {
				return err
			}
			return s.printMembers(v, extended, topology, format)
		})
	})
}

func historyCmd(a *App) *cobra.Command {
	var g globalOpts
	var format string
	cmd := &cobra.Command{
		Use:   "history [SCOPE]",
		Short: "List the timeline switches: timeline, LSN, reason, time, new leader",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format, tableFormats...); err != nil {
				return err
			}
			return g.with(a, args, func(s *session) error {
				v, err := s.view()
				if err != nil {
					return err
				}
				t := &table{columns: []string{"TL", "LSN", "Reason", "Timestamp", "New Leader"}, right: map[string]bool{"TL": true, "LSN": true}}
				for _, h := range v.History {
					t.rows = append(t.rows, []any{h.Timeline, h.LSN, h.Reason, h.Timestamp, h.NewLeader})
				}
				return t.write(a.Out, format)
			})
		},
	}
	g.register(cmd)
	cmd.Flags().StringVarP(&format, "format", "f", "table", "output format: table, json, yaml or tsv")
	return cmd
}

func dsnCmd(a *App) *cobra.Command {
	var g globalOpts
	var role, member string
	cmd := &cobra.Command{
		Use:   "dsn [SCOPE]",
		Short: "Print a connection string for the leader, a replica or a named member",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if role != "" && member != "" {
				return errors.New("--role and --member are mutually exclusive options")
			}
			if err := checkFormat(role, "", "leader", "primary", "master", "replica", "standby", "any"); err != nil {
				return fmt.Errorf("--role: %w", err)
			}
			return g.with(a, args, func(s *session) error {
				v, err := s.view()
				if err != nil {
					return err
				}
				m, ok := pickMember(v, role, member)
				if !ok {
					return errors.New("Can not find a suitable member")
				}
				h, p := m.HostPort()
				fmt.Fprintf(a.Out, "host=%s port=%d\n", h, p)
				return nil
			})
		},
	}
	g.register(cmd)
	cmd.Flags().StringVarP(&role, "role", "r", "", "primary (default), replica or any")
	cmd.Flags().StringVarP(&member, "member", "m", "", "this member")
	return cmd
}

// pickMember chooses dsn's member: by name, the leader, or a replica (a running, streaming one
// first).
func pickMember(v *cluster.View, role, name string) (cluster.Member, bool) {
	if name != "" {
		return v.Member(name)
	}
	switch role {
	case "", "leader", "primary", "master":
		return v.LeaderMember()
	case "any":
		if m, ok := v.LeaderMember(); ok {
			return m, true
		}
		if len(v.Members) > 0 {
			return v.Members[0], true
		}
		return cluster.Member{}, false
	}
	var replicas []cluster.Member
	for _, m := range v.Members {
		if v.Leader == nil || m.Name != v.Leader.Name {
			replicas = append(replicas, m)
		}
	}
	slices.SortStableFunc(replicas, func(x, y cluster.Member) int {
		score := func(m cluster.Member) int {
			switch {
			case m.State == cluster.StateRunning && m.ReplicationState == "streaming":
				return 0
			case m.State == cluster.StateRunning:
				return 1
			}
			return 2
		}
		return score(x) - score(y)
	})
	if len(replicas) == 0 {
		return cluster.Member{}, false
	}
	return replicas[0], true
}

func showConfigCmd(a *App) *cobra.Command {
	var g globalOpts
	cmd := &cobra.Command{
		Use:   "show-config [SCOPE]",
		Short: "Print the dynamic configuration (the config key) as YAML",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.with(a, args, func(s *session) error {
				v, err := s.view()
				if err != nil {
					return err
				}
				if len(v.ConfigRaw) == 0 {
					return fmt.Errorf("The config key does not exist in the cluster %s", s.t.Scope)
				}
				m, err := decodeConfig(v.ConfigRaw)
				if err != nil {
					return err
				}
				text, err := configYAML(m)
				if err != nil {
					return err
				}
				fmt.Fprint(a.Out, text)
				return nil
			})
		},
	}
	g.register(cmd)
	return cmd
}
