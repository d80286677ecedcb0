package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"gopkg.in/yaml.v3"

	"github.com/pgvigil/pgvigil/internal/cluster"
	"github.com/pgvigil/pgvigil/internal/dcs/etcd"
	"github.com/pgvigil/pgvigil/internal/localcluster"
)

// ctlResult is one run of an operator command.
type ctlResult struct {
	code        int
	out, errOut string
}

func (r ctlResult) String() string {
	return fmt.Sprintf("exit %d\n--- stdout\n%s--- stderr\n%s", r.code, r.out, r.errOut)
}

// runCtl runs the pgvigil binary with args; stdin is not a terminal (/dev/null unless given).
func runCtl(t *testing.T, stdin string, args ...string) ctlResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	err := cmd.Run()
	r := ctlResult{out: out.String(), errOut: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running pgvigil %v: %v", args, err)
	}
	return r
}

// ctl runs a command against the cluster found through --dcs-url and --scope.
func ctl(t *testing.T, c *localcluster.Cluster, args ...string) ctlResult {
	t.Helper()
	args = append(args, "--dcs-url", "etcd://"+strings.Join(c.Etcd.Endpoints(), ","), "--scope", localcluster.DefaultScope)
	return runCtl(t, "", args...)
}

// ctlConf runs a command with a node's configuration file (store, and PostgreSQL credentials).
func ctlConf(t *testing.T, n *localcluster.Node, args ...string) ctlResult {
	t.Helper()
	return runCtl(t, "", append(args, "-c", n.ConfigPath)...)
}

func mustSucceed(t *testing.T, r ctlResult, want ...string) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("command failed:\n%s", r)
	}
	for _, w := range want {
		if !strings.Contains(r.out, w) {
			t.Fatalf("output lacks %q:\n%s", w, r)
		}
	}
}

func mustRefuse(t *testing.T, r ctlResult, reason string) {
	t.Helper()
	if r.code == 0 || !strings.Contains(r.errOut, "Error: ") || !strings.Contains(r.errOut, reason) {
		t.Fatalf("want a refusal (non-zero exit, stderr naming %q):\n%s", reason, r)
	}
}

// storeView reads the cluster the way the commands do.
func storeView(t *testing.T, c *localcluster.Cluster) *cluster.View {
	t.Helper()
	st, err := etcd.New(etcd.Config{Endpoints: c.Etcd.Endpoints(), Namespace: "/service/", Scope: localcluster.DefaultScope,
		Name: "e2e-reader", TTL: 10 * time.Second, RetryTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	v, err := st.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func leaderKey(t *testing.T, c *localcluster.Cluster) string {
	t.Helper()
	v, err := c.StoreValue(context.Background(), "leader")
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// noSwitchoverPending: the failover key is absent or {}.
func noSwitchoverPending(t *testing.T, c *localcluster.Cluster) {
	t.Helper()
	if v, _ := c.StoreValue(context.Background(), "failover"); v != "" && v != "{}" {
		t.Fatalf("failover key written: %s", v)
	}
}

func nodeByName(c *localcluster.Cluster, name string) *localcluster.Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

func listJSON(t *testing.T, c *localcluster.Cluster) []map[string]any {
	t.Helper()
	r := ctl(t, c, "list", "-f", "json")
	mustSucceed(t, r)
	var rows []map[string]any
	if err := json.Unmarshal([]byte(r.out), &rows); err != nil {
		t.Fatalf("list -f json does not parse: %v\n%s", err, r.out)
	}
	return rows
}

func showSetting(n *localcluster.Node, name string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, n.DSN())
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	var v string
	err = conn.QueryRow(ctx, "SHOW "+pgx.Identifier{name}.Sanitize()).Scan(&v)
	return v, err
}

// TestCLI drives the operator commands, as an operator's shell would, against one 3-node cluster.
func TestCLI(t *testing.T) {
	ctx := context.Background()
	c, p := streamingCluster(t, 3)
	var replicas []*localcluster.Node
	for _, n := range c.Nodes {
		if n != p {
			replicas = append(replicas, n)
		}
	}
	r1, r2 := replicas[0], replicas[1]
	// The member keys catch up with /patroni within a loop.
	waitFor(t, "replicas streaming in the member keys", 15*time.Second, func() bool {
		for _, m := range storeView(t, c).Members {
			if m.Name != p.Name && m.ReplicationState != "streaming" {
				return false
			}
		}
		return true
	})

	t.Run("list, topology, dsn and show-config match the store", func(t *testing.T) {
		v := storeView(t, c)
		if v.Leader == nil || v.Leader.Name != p.Name || v.Initialize == nil {
			t.Fatalf("store view: leader %+v, initialize %v", v.Leader, v.Initialize)
		}
		role := func(name string) string {
			if name == v.Leader.Name {
				return "Leader"
			}
			return "Replica"
		}

		r := ctl(t, c, "list")
		mustSucceed(t, r, fmt.Sprintf("+ Cluster: demo (%s) ", *v.Initialize), "| Member ", "| Lag in MB |")
		for _, m := range v.Members {
			var line string
			for _, l := range strings.Split(r.out, "\n") {
				if strings.HasPrefix(l, "| "+m.Name+" ") {
					line = l
				}
			}
			if !strings.Contains(line, "| "+role(m.Name)+" ") || !strings.Contains(line, ":"+strconv.Itoa(nodeByName(c, m.Name).PGPort)) {
				t.Errorf("table line for %s = %q", m.Name, line)
			}
		}
		if strings.Contains(r.out, "\x1b[") {
			t.Errorf("colour without a terminal:\n%s", r.out)
		}

		rows := listJSON(t, c)
		if len(rows) != len(v.Members) {
			t.Fatalf("list -f json: %d rows, store has %d members", len(rows), len(v.Members))
		}
		for i, row := range rows {
			m := v.Members[i]
			n := nodeByName(c, m.Name)
			if row["Cluster"] != "demo" || row["Member"] != m.Name || row["Role"] != role(m.Name) ||
				row["Host"] != "127.0.0.1:"+strconv.Itoa(n.PGPort) || row["TL"] != float64(m.Timeline) {
				t.Errorf("json row %v for member %+v", row, m)
			}
			_, hasLag := row["Lag in MB"]
			if m.Name == p.Name {
				if hasLag || row["State"] != "running" {
					t.Errorf("leader row %v: want state running and no (empty) lag", row)
				}
			} else if !hasLag || row["State"] != "streaming" {
				t.Errorf("replica row %v: want state streaming and a lag", row)
			}
		}

		r = ctl(t, c, "list", "-f", "yaml")
		mustSucceed(t, r)
		var yrows []map[string]any
		if err := yaml.Unmarshal([]byte(r.out), &yrows); err != nil || len(yrows) != len(rows) {
			t.Fatalf("list -f yaml: %v\n%s", err, r.out)
		}
		for i, row := range yrows {
			if row["Member"] != rows[i]["Member"] || row["Role"] != rows[i]["Role"] || row["Host"] != rows[i]["Host"] {
				t.Errorf("yaml row %v, json row %v", row, rows[i])
			}
		}

		r = ctl(t, c, "list", "-f", "tsv")
		mustSucceed(t, r)
		lines := strings.Split(strings.TrimRight(r.out, "\n"), "\n")
		if len(lines) != len(rows)+1 || lines[0] != "Cluster\tMember\tHost\tRole\tState\tTL\tLag in MB" {
			t.Fatalf("list -f tsv:\n%s", r.out)
		}
		for i, l := range lines[1:] {
			f := strings.Split(l, "\t")
			if len(f) != 7 || f[0] != "demo" || f[1] != rows[i]["Member"] || f[3] != rows[i]["Role"] {
				t.Errorf("tsv line %q, json row %v", l, rows[i])
			}
		}

		mustSucceed(t, ctl(t, c, "list", "-e"), "Pending restart", "Scheduled restart", "Tags")

		r = ctl(t, c, "topology")
		mustSucceed(t, r)
		var members []string
		for _, l := range strings.Split(r.out, "\n") {
			if strings.HasPrefix(l, "| ") && !strings.HasPrefix(l, "| Member") {
				members = append(members, strings.TrimSpace(strings.Split(l, "|")[1]))
			}
		}
		if len(members) != 3 || members[0] != p.Name || !strings.HasPrefix(members[1], "+ ") || !strings.HasPrefix(members[2], "+ ") {
			t.Fatalf("topology order %q:\n%s", members, r.out)
		}

		mustSucceed(t, ctl(t, c, "dsn", "--role", "primary"), fmt.Sprintf("host=127.0.0.1 port=%d\n", p.PGPort))
		r = ctl(t, c, "dsn", "--role", "replica")
		mustSucceed(t, r)
		if r.out != fmt.Sprintf("host=127.0.0.1 port=%d\n", r1.PGPort) && r.out != fmt.Sprintf("host=127.0.0.1 port=%d\n", r2.PGPort) {
			t.Fatalf("dsn --role replica = %q", r.out)
		}

		r = ctl(t, c, "show-config")
		mustSucceed(t, r)
		var cfg map[string]any
		if err := yaml.Unmarshal([]byte(r.out), &cfg); err != nil || cfg["ttl"] != 6 || cfg["loop_wait"] != 1 || cfg["retry_timeout"] != 2 {
			t.Fatalf("show-config: %v\n%s", err, r.out)
		}
		r = ctl(t, c, "history", "-f", "json")
		mustSucceed(t, r)
		if strings.TrimSpace(r.out) != "[]" {
			t.Fatalf("history before any switchover: %q", r.out)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("refused switchovers exit non-zero and change nothing", func(t *testing.T) {
		unchanged := func() {
			t.Helper()
			if l := leaderKey(t, c); l != p.Name {
				t.Fatalf("leader key = %q, want %q", l, p.Name)
			}
			noSwitchoverPending(t, c)
		}
		mustRefuse(t, ctl(t, c, "switchover", "--candidate", "nosuch", "--force"), "Member nosuch does not exist in cluster demo")
		unchanged()
		mustRefuse(t, ctl(t, c, "switchover", "--leader", r1.Name, "--candidate", r2.Name, "--force"),
			"Member "+r1.Name+" is not the leader of cluster demo")
		unchanged()
		mustRefuse(t, ctl(t, c, "switchover", "--candidate", p.Name, "--force"), "Switchover target and source are the same")
		unchanged()
		mustRefuse(t, ctl(t, c, "switchover", "--candidate", r1.Name, "--scheduled", "soon", "--force"), "Unable to parse scheduled timestamp (soon)")
		unchanged()
		// Nobody to confirm: no terminal and no --force.
		r := ctl(t, c, "switchover", "--candidate", r1.Name)
		mustRefuse(t, r, "standard input is not a terminal")
		if !strings.Contains(r.out, "Current cluster topology") {
			t.Errorf("topology not shown before the refusal:\n%s", r)
		}
		unchanged()

		// A member tagged nofailover: restart r2 with the tag.
		if err := c.StopNode(r2); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(r2.ConfigPath, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.WriteString("tags:\n  nofailover: true\n")
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if err := c.StartNode(r2); err != nil {
			t.Fatal(err)
		}
		waitFor(t, r2.Name+" back, tagged nofailover", bootTimeout, func() bool {
			m, ok := storeView(t, c).Member(r2.Name)
			return ok && m.Tags.NoFailover && m.ReplicationState == "streaming"
		})
		mustSucceed(t, ctl(t, c, "list", "-e"), "nofailover: true")
		mustRefuse(t, ctl(t, c, "switchover", "--candidate", r2.Name, "--force"),
			"Member "+r2.Name+" does not exist in cluster demo or is tagged as nofailover")
		unchanged()
	})
	if t.Failed() {
		return
	}

	t.Run("switchover to a candidate; the old primary streams again", func(t *testing.T) {
		t0 := time.Now()
		r := ctl(t, c, "switchover", "--candidate", r1.Name, "--force")
		mustSucceed(t, r, `Successfully switched over to "`+r1.Name+`"`)
		t.Logf("switchover command took %.2fs", time.Since(t0).Seconds())
		if l := leaderKey(t, c); l != r1.Name {
			t.Fatalf("leader key = %q after the switchover", l)
		}
		waitFor(t, "the old primary streaming from the new one", bootTimeout, func() bool { return c.Streaming(ctx) })
		// The new leader clears the request once it has promoted.
		waitFor(t, "the failover key cleared", 10*time.Second, func() bool {
			v, _ := c.StoreValue(ctx, "failover")
			return v == "" || v == "{}"
		})
		if q, err := c.Primary(ctx); err != nil || q != r1 {
			t.Fatalf("primary = %v (%v), want %s", q, err, r1.Name)
		}

		r = ctl(t, c, "history", "-f", "json")
		mustSucceed(t, r)
		var hist []map[string]any
		if err := json.Unmarshal([]byte(r.out), &hist); err != nil || len(hist) != 1 {
			t.Fatalf("history -f json: %v\n%s", err, r.out)
		}
		if hist[0]["New Leader"] != r1.Name || hist[0]["TL"] != 1.0 || hist[0]["LSN"].(float64) <= 0 || hist[0]["Timestamp"] == "" {
			t.Fatalf("history entry %v", hist[0])
		}
		mustSucceed(t, ctl(t, c, "history"), "| TL |", "| New Leader |", " "+r1.Name+" ")
		for _, row := range listJSON(t, c) {
			if (row["Member"] == r1.Name) != (row["Role"] == "Leader") {
				t.Errorf("list after the switchover: %v", row)
			}
		}
	})
	if t.Failed() {
		return
	}

	t.Run("scheduled switchover fires on time; another is cancelled", func(t *testing.T) {
		// r1 leads now; schedule the way back to p.
		at := time.Now().Add(8 * time.Second).Truncate(time.Second).Add(time.Second)
		r := ctl(t, c, "switchover", "--candidate", p.Name, "--scheduled", at.Format(time.RFC3339), "--force")
		mustSucceed(t, r, "Switchover scheduled")
		mustSucceed(t, ctl(t, c, "list"), "Switchover scheduled at: ", "from: "+r1.Name, "to: "+p.Name)
		var moved time.Time
		waitFor(t, "the scheduled switchover", time.Until(at)+30*time.Second, func() bool {
			if leaderKey(t, c) == p.Name {
				moved = time.Now()
				return true
			}
			return false
		})
		if moved.Before(at) {
			t.Fatalf("switchover scheduled for %s happened at %s", at.Format(time.TimeOnly), moved.Format(time.TimeOnly))
		}
		if late := moved.Sub(at); late > 10*time.Second {
			t.Fatalf("scheduled switchover %s late", late)
		}
		t.Logf("scheduled switchover done %.2fs after its time", moved.Sub(at).Seconds())
		waitFor(t, "streaming after the scheduled switchover", bootTimeout, func() bool { return c.Streaming(ctx) })

		later := time.Now().Add(time.Hour).Format(time.RFC3339)
		mustSucceed(t, ctl(t, c, "switchover", "--candidate", r1.Name, "--scheduled", later, "--force"), "Switchover scheduled")
		if v, _ := c.StoreValue(ctx, "failover"); !strings.Contains(v, `"member":"`+r1.Name+`"`) {
			t.Fatalf("failover key after scheduling: %s", v)
		}
		mustSucceed(t, ctl(t, c, "switchover", "--cancel"), "Success: scheduled switchover deleted")
		noSwitchoverPending(t, c)
		mustSucceed(t, ctl(t, c, "switchover", "--cancel"), "No pending scheduled switchover")
		if l := leaderKey(t, c); l != p.Name {
			t.Fatalf("leader key = %q after the cancelled switchover", l)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("pause stops automatic failover and restarts; resume recovers", func(t *testing.T) {
		mustSucceed(t, ctl(t, c, "pause", "--wait"), "Success: cluster management is paused")
		mustRefuse(t, ctl(t, c, "pause"), "Cluster is already paused")
		mustSucceed(t, ctl(t, c, "list"), "Maintenance mode: on")
		mustRefuse(t, ctl(t, c, "switchover", "--force"), "Switchover is possible only to a specific candidate in a paused state")
		mustRefuse(t, ctl(t, c, "switchover", "--candidate", r1.Name, "--scheduled", time.Now().Add(time.Hour).Format(time.RFC3339), "--force"),
			"Can't schedule switchover in the paused state")
		if l := leaderKey(t, c); l != p.Name {
			t.Fatalf("leader key = %q", l)
		}
		noSwitchoverPending(t, c)

		pm := p.PostmasterPID()
		if pm == 0 {
			t.Fatal("no postmaster pid")
		}
		if err := syscall.Kill(pm, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the killed primary to refuse connections", 10*time.Second, func() bool { return p.Exec(ctx, "SELECT 1") != nil })
		// ttl + 3 s: long enough for the key to have expired and a replica to have promoted,
		// were the cluster not paused.
		deadline := time.Now().Add(9 * time.Second)
		for time.Now().Before(deadline) {
			for _, n := range c.Nodes {
				if n == p {
					continue
				}
				if code, err := n.Check(ctx, "/primary"); err == nil && code == 200 {
					t.Fatalf("%s became primary while paused", n.Name)
				}
			}
			if pid := p.PostmasterPID(); pid != 0 && pid != pm {
				t.Fatalf("PostgreSQL on %s restarted (pid %d) while paused", p.Name, pid)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if l := leaderKey(t, c); l != p.Name {
			t.Fatalf("leader key = %q while paused, want %q kept", l, p.Name)
		}

		mustSucceed(t, ctl(t, c, "resume", "--wait"), "Success: cluster management is resumed")
		mustRefuse(t, ctl(t, c, "resume"), "Cluster is not paused")
		waitFor(t, "a primary after resume", failoverTimeout, func() bool { _, err := c.Primary(ctx); return err == nil })
		waitFor(t, "all members streaming after resume", bootTimeout, func() bool { return c.Streaming(ctx) })
		if q, _ := c.Primary(ctx); q != nil {
			p = q
		}
	})
	if t.Failed() {
		return
	}

	t.Run("edit-config reaches every node; invalid edits are refused", func(t *testing.T) {
		conf := c.Nodes[0]
		r := ctlConf(t, conf, "edit-config", "--set", "loop_wait=1", "--pg", "work_mem=9MB", "--force")
		mustSucceed(t, r, "+    work_mem: 9MB", "Configuration changed")
		for _, n := range c.Nodes {
			waitFor(t, "work_mem 9MB on "+n.Name, 30*time.Second, func() bool {
				v, err := showSetting(n, "work_mem")
				return err == nil && v == "9MB"
			})
		}
		before, _ := c.StoreValue(ctx, "config")
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"--set", "ttl=1"}, "ttl"},
			{[]string{"--pg", "work_mem_x=1"}, "unknown PostgreSQL parameter work_mem_x"},
			{[]string{"--pg", "work_mem=lots"}, `invalid value for parameter "work_mem": "lots"`},
			{[]string{"--pg", "wal_level=bogus"}, "wal_level"},
			{[]string{"--set", "standby_cluster=true"}, "standby_cluster"},
		} {
			mustRefuse(t, ctlConf(t, conf, append([]string{"edit-config", "--force"}, tc.args...)...), tc.want)
			if after, _ := c.StoreValue(ctx, "config"); after != before {
				t.Fatalf("%v changed the config key:\n%s\n%s", tc.args, before, after)
			}
		}
		mustSucceed(t, ctlConf(t, conf, "edit-config", "--pg", "work_mem=9MB", "--force"), "Not changed")
		r = ctl(t, c, "edit-config", "--pg", "work_mem=10MB")
		mustRefuse(t, r, "standard input is not a terminal")
		if after, _ := c.StoreValue(ctx, "config"); after != before {
			t.Fatalf("an unconfirmed edit changed the config key")
		}
	})
	if t.Failed() {
		return
	}

	t.Run("restart and reload members", func(t *testing.T) {
		var rep *localcluster.Node
		for _, n := range c.Nodes {
			if n != p {
				rep = n
				break
			}
		}
		before := rep.PostmasterPID()
		mustSucceed(t, ctl(t, c, "restart", rep.Name, "--force"), "Success: restart on member "+rep.Name)
		if after := rep.PostmasterPID(); after == 0 || after == before {
			t.Fatalf("postmaster pid %d → %d: not restarted", before, after)
		}
		mustRefuse(t, ctl(t, c, "restart", "nosuch", "--force"), "nosuch is not a member of cluster demo")
		mustRefuse(t, ctl(t, c, "restart", rep.Name), "standard input is not a terminal")
		r := ctl(t, c, "reload", "--force")
		mustSucceed(t, r)
		if n := strings.Count(r.out, "Reload request received for member"); n != 3 {
			t.Fatalf("reload answered for %d members:\n%s", n, r)
		}
		waitFor(t, "streaming after the restart", bootTimeout, func() bool { return c.Streaming(ctx) })
	})
	if t.Failed() {
		return
	}

	t.Run("reinit a replica, refused on the leader", func(t *testing.T) {
		mustRefuse(t, ctl(t, c, "reinit", p.Name, "--force"), "I am the leader, can not reinitialize")
		var rep *localcluster.Node
		for _, n := range c.Nodes {
			if n != p {
				rep = n
				break
			}
		}
		before := rep.PostmasterPID()
		r := ctl(t, c, "reinit", rep.Name, "--force", "--wait", "--wait-timeout", "120")
		mustSucceed(t, r, "Success: reinitialize for member "+rep.Name, "Reinitialize is completed on: "+rep.Name)
		if after := rep.PostmasterPID(); after == 0 || after == before {
			t.Fatalf("postmaster pid %d → %d after reinit", before, after)
		}
		waitFor(t, "streaming after reinit", bootTimeout, func() bool { return c.Streaming(ctx) })
	})
	if t.Failed() {
		return
	}

	t.Run("failover to a named candidate", func(t *testing.T) {
		mustRefuse(t, ctl(t, c, "failover", "--force"), "Failover could be performed only to a specific candidate")
		var cand *localcluster.Node
		for _, n := range c.Nodes {
			if n != p && n != r2 { // r2 is tagged nofailover
				cand = n
			}
		}
		mustRefuse(t, ctl(t, c, "failover", "--candidate", cand.Name), "standard input is not a terminal")
		mustSucceed(t, ctl(t, c, "failover", "--candidate", cand.Name, "--force"), `Successfully failed over to "`+cand.Name+`"`)
		waitFor(t, "streaming after the failover", bootTimeout, func() bool { return c.Streaming(ctx) })
		if q, err := c.Primary(ctx); err != nil || q != cand {
			t.Fatalf("primary = %v (%v), want %s", q, err, cand.Name)
		}
	})
}

// TestCLIRemove wipes a stopped 1-node cluster's keys from the store.
func TestCLIRemove(t *testing.T) {
	ctx := context.Background()
	c := startCluster(t, 1)
	waitFor(t, "the member running as primary", bootTimeout, func() bool { return c.Streaming(ctx) })
	mustRefuse(t, ctl(t, c, "remove", "demo"), "standard input is not a terminal")
	if v, _ := c.StoreValue(ctx, "initialize"); v == "" {
		t.Fatal("the refused remove deleted the initialize key")
	}
	if err := c.StopNode(c.Nodes[0]); err != nil {
		t.Fatal(err)
	}
	mustSucceed(t, ctl(t, c, "remove", "demo", "--yes-i-am-aware"), "Success: removed")
	for _, k := range []string{"config", "initialize", "leader", "status", "members/node1", "history", "failover"} {
		if v, _ := c.StoreValue(ctx, k); v != "" {
			t.Errorf("key %s survived the remove: %s", k, v)
		}
	}
	r := ctl(t, c, "list", "-f", "json")
	mustSucceed(t, r)
	if strings.TrimSpace(r.out) != "[]" {
		t.Fatalf("list after remove: %s", r.out)
	}
}
