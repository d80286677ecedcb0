package ha

import (
	"testing"
	"time"

	"github.com/pgvigil/pgvigil/internal/cluster"
)

// Cases for operator requests: switchover/failover (the failover key), maintenance mode and
// per-member requests. TestDecide runs them with the others.
func operationCases() []decideCase {
	s := time.Second
	fresh := renewedAgo(1 * s)
	req := func(leader, member string) *cluster.Failover {
		return &cluster.Failover{Leader: leader, Member: member}
	}
	later := t0.Add(time.Hour)
	three := func(f *cluster.Failover) *viewBuilder {
		v := view().leader("node1").member(primaryMember("node1"), running("node2"), running("node3"))
		v.v.Failover = f
		return v
	}
	free := func(f *cluster.Failover) *viewBuilder {
		v := view().member(running("node1"), running("node2"), running("node3"))
		v.v.Failover = f
		return v
	}
	pause := func(c *cluster.DynamicConfig) { c.Pause = true }
	return []decideCase{
		{
			name: "leader with a due switchover to a healthy candidate: hand over",
			obs:  observe(self("node1")).local(runningPrimary(100)).view(three(req("node1", "node2"))).leaseHeld(fresh).build(),
			want: acts(do(RenewLeader), doTo(Switchover, "node2")), verdict: "switching over to node2",
		},
		{
			name: "leader with a switchover to any replica",
			obs:  observe(self("node1")).local(runningPrimary(100)).view(three(req("node1", ""))).leaseHeld(fresh).build(),
			want: acts(do(RenewLeader), do(Switchover)), verdict: "switching over to the healthiest replica",
		},
		{
			name: "scheduled switchover not due yet: steady leader",
			obs: observe(self("node1")).local(runningPrimary(100)).
				view(three(&cluster.Failover{Leader: "node1", Member: "node2", ScheduledAt: &later})).leaseHeld(fresh).build(),
			want: acts(do(RenewLeader), Action{Kind: SyncSlots}), verdict: "the leader with the lock",
		},
		{
			name: "switchover to a member that is not running: rejected and cleared",
			obs: observe(self("node1")).local(runningPrimary(100)).
				view(func() *viewBuilder {
					v := view().leader("node1").member(primaryMember("node1"), downMember("node2"))
					v.v.Failover = req("node1", "node2")
					return v
				}()).leaseHeld(fresh).build(),
			want: acts(do(RenewLeader), do(ClearFailover)), verdict: "rejecting the switchover to node2",
		},
		{
			name: "switchover to a nofailover member: rejected",
			obs: observe(self("node1")).local(runningPrimary(100)).
				view(func() *viewBuilder {
					v := view().leader("node1").member(primaryMember("node1"), running("node2").noFailover())
					v.v.Failover = req("node1", "node2")
					return v
				}()).leaseHeld(fresh).build(),
			want: acts(do(RenewLeader), do(ClearFailover)), verdict: "not a running replica eligible for promotion",
		},
		{
			name: "new leader named by the request clears it",
			obs: observe(self("node2")).local(runningPrimary(100)).
				view(func() *viewBuilder {
					v := view().leader("node2").member(running("node1"), primaryMember("node2"))
					v.v.Failover = req("node1", "node2")
					return v
				}()).leaseHeld(fresh).build(),
			want: acts(do(RenewLeader), do(ClearFailover)), verdict: "clearing the switchover request",
		},
		{
			name:    "requested candidate races without comparing peers",
			obs:     observe(self("node2")).local(runningReplica(50)).view(free(req("node1", "node2"))).peers(peer("node3", 100)).build(),
			want:    acts(do(AcquireLeader)),
			verdict: "switchover requested to node2",
		},
		{
			name:    "other replicas defer to the requested candidate",
			obs:     observe(self("node3")).local(runningReplica(100)).view(free(req("node1", "node2"))).peers(peer("node2", 50)).build(),
			want:    none(),
			verdict: "not racing for the leader lock: switchover to node2 requested",
		},
		{
			name: "a failover request to a dead candidate does not stop the race",
			obs: observe(self("node3")).local(runningReplica(100)).
				view(func() *viewBuilder {
					v := view().member(downMember("node2"), running("node3"))
					v.v.Failover = req("", "node2")
					return v
				}()).build(),
			want: acts(do(AcquireLeader)), verdict: "I am the healthiest member",
		},
		{
			name: "old leader stopped after its hand-over waits for the new leader",
			obs: observe(self("node1")).local(stoppedPG().wasPrimary()).
				view(free(req("node1", "node2"))).build(),
			want: none(), verdict: "waiting for the new leader of the switchover to take over",
		},
		{
			name: "watchdog required but not running: no race",
			obs: func() Observation {
				o := observe(self("node2")).local(runningReplica(100)).view(free(nil)).build()
				o.WatchdogMissing = true
				return o
			}(),
			want: none(), verdict: "the watchdog is required but not running",
		},
		{
			name:    "paused: free leader lock is not raced for",
			obs:     observe(self("node2")).local(runningReplica(100)).view(free(nil)).config(pause).build(),
			want:    none(),
			verdict: "PAUSE: no action: leader lock is free",
		},
		{
			name:    "paused: a stopped PostgreSQL is left alone",
			obs:     observe(self("node2")).view(three(nil)).config(pause).build(),
			want:    none(),
			verdict: "PAUSE: PostgreSQL is not running",
		},
		{
			name:    "paused: the leader keeps its lock",
			obs:     observe(self("node1")).local(runningPrimary(100)).view(three(nil)).leaseHeld(fresh).config(pause).build(),
			want:    acts(do(RenewLeader)),
			verdict: "PAUSE: no action: I am (node1), the leader with the lock",
		},
		{
			name:    "paused: fencing still applies",
			obs:     observe(self("node2")).local(runningPrimary(100)).view(three(nil)).config(pause).build(),
			want:    acts(Action{Kind: Demote, Mode: ModeImmediate, Target: "node1"}),
			verdict: "demoting self because node1 holds the leader lock",
		},
		{
			name:    "restart request on a running replica",
			obs:     observe(self("node2")).local(runningReplica(100).following("node1")).view(three(nil)).request(Restart).build(),
			want:    acts(do(Restart)),
			verdict: "restarting PostgreSQL on request",
		},
		{
			name:    "restart request on the leader keeps the lock",
			obs:     observe(self("node1")).local(runningPrimary(100)).view(three(nil)).leaseHeld(fresh).request(Restart).build(),
			want:    acts(do(RenewLeader), do(Restart)),
			verdict: "restarting PostgreSQL on request",
		},
		{
			name:    "reinitialize request on a replica clones from the leader",
			obs:     observe(self("node2")).local(runningReplica(100).following("node1")).view(three(nil)).request(Reinit).build(),
			want:    acts(doTo(Reinit, "node1")),
			verdict: "reinitializing on request",
		},
		{
			name:    "reinitialize request on the leader is refused",
			obs:     observe(self("node1")).local(runningPrimary(100)).view(three(nil)).leaseHeld(fresh).request(Reinit).build(),
			want:    none(),
			verdict: "refusing to reinitialize: I am the leader",
		},
	}
}

func TestRequestRefusedIsReported(t *testing.T) {
	v := view().leader("node1").member(primaryMember("node1"), running("node2"))
	leader := observe(self("node1")).local(runningPrimary(100)).view(v).leaseHeld(renewedAgo(time.Second)).request(Reinit).build()
	if d := Decide(leader); !d.RequestRefused {
		t.Fatalf("reinitialize on the leader: %+v, want RequestRefused", d)
	}
	replica := observe(self("node2")).local(runningReplica(100).following("node1")).view(v).request(Reinit).build()
	if d := Decide(replica); d.RequestRefused || !d.Has(Reinit) {
		t.Fatalf("reinitialize on a replica: %+v, want a Reinit", d)
	}
}
