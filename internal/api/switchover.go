package api

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/pgvigil/pgvigil/internal/cluster"
)

// httpError is an answer decided while validating a request.
type httpError struct {
	code int
	msg  string
}

// parseSchedule reads an ISO 8601 timestamp with a time zone that must lie in the future.
func parseSchedule(s string, now time.Time) (time.Time, *httpError) {
	s = strings.TrimSpace(s)
	var at time.Time
	var err error
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02T15:04Z07:00"} {
		if at, err = time.Parse(layout, s); err == nil {
			break
		}
	}
	if err != nil {
		for _, layout := range []string{"2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05.999999999", "2006-01-02T15:04"} {
			if _, e := time.Parse(layout, s); e == nil {
				return time.Time{}, &httpError{http.StatusBadRequest, "Timezone information is mandatory for the scheduled switchover"}
			}
		}
		return time.Time{}, &httpError{http.StatusUnprocessableEntity, "Unable to parse scheduled timestamp. It should be in an unambiguous format, e.g. ISO 8601"}
	}
	if !at.After(now) {
		return time.Time{}, &httpError{http.StatusUnprocessableEntity, "Cannot schedule switchover in the past"}
	}
	return at, nil
}

// switchoverRequest is a validated POST /switchover or /failover.
type switchoverRequest struct {
	failover  bool
	leader    string
	candidate string
	at        *time.Time
}

func (q switchoverRequest) action() string {
	if q.failover {
		return "Failover"
	}
	return "Switchover"
}

// parseSwitchover checks a request against the cluster as the store holds it now, with
// Patroni's status codes and texts.
func parseSwitchover(m map[string]any, failover bool, v *cluster.View, now time.Time) (switchoverRequest, *httpError) {
	q := switchoverRequest{failover: failover}
	bad := func(code int, f string, a ...any) (switchoverRequest, *httpError) {
		return q, &httpError{code, fmt.Sprintf(f, a...)}
	}
	if err := onlyKeys(m, "switchover option", "leader", "candidate", "scheduled_at", "member"); err != nil {
		return bad(http.StatusBadRequest, "%s", err)
	}
	var err error
	if q.leader, err = str(m, "leader"); err != nil {
		return bad(http.StatusBadRequest, "%s", err)
	}
	if q.candidate, err = str(m, "candidate"); err != nil {
		return bad(http.StatusBadRequest, "%s", err)
	}
	sched, err := str(m, "scheduled_at")
	if err != nil {
		return bad(http.StatusBadRequest, "%s", err)
	}
	if failover && q.leader != "" {
		q.failover = false // Patroni 4: a failover naming the leader is a switchover
	}
	if q.failover {
		if sched != "" {
			return bad(http.StatusBadRequest, "Failover can't be scheduled")
		}
		if q.candidate == "" {
			return bad(http.StatusBadRequest, "Failover could be performed only to a specific candidate")
		}
	} else if q.leader == "" {
		return bad(http.StatusBadRequest, "Switchover could be performed only from a specific leader")
	}
	if q.leader != "" && q.leader == q.candidate {
		return bad(http.StatusBadRequest, "Switchover target and source are the same")
	}
	if v.Config.Pause {
		if sched != "" {
			return bad(http.StatusBadRequest, "Can't schedule switchover in the paused state")
		}
		if q.candidate == "" {
			return bad(http.StatusBadRequest, "Switchover is possible only to a specific candidate in a paused state")
		}
	}
	if sched != "" {
		at, herr := parseSchedule(sched, now)
		if herr != nil {
			return q, herr
		}
		q.at = &at
	}
	if q.leader != "" && (v.Leader == nil || v.Leader.Name != q.leader) {
		return bad(http.StatusPreconditionFailed, "leader name does not match")
	}
	if q.candidate != "" {
		m, ok := v.Member(q.candidate)
		if !ok {
			return bad(http.StatusPreconditionFailed, "candidate does not exists")
		}
		if v.Config.SynchronousMode != cluster.SyncOff && !v.IsSyncStandby(q.candidate) {
			return bad(http.StatusPreconditionFailed, "candidate name does not match with sync_standby")
		}
		if q.at == nil && (m.State != cluster.StateRunning || m.Tags.NoFailover || m.Tags.FailoverPriority <= 0) {
			return bad(http.StatusPreconditionFailed, "%s is not possible: candidate %s is not a running member eligible for promotion",
				strings.ToLower(q.action()), q.candidate)
		}
		return q, nil
	}
	if q.at != nil {
		return q, nil // a scheduled request is checked when it is due
	}
	eligible := 0
	for _, m := range v.Members {
		if m.Name != q.leader && m.State == cluster.StateRunning && !m.Tags.NoFailover && m.Tags.FailoverPriority > 0 {
			eligible++
		}
	}
	if len(v.Members) <= 1 {
		return bad(http.StatusPreconditionFailed, "%s is not possible: cluster does not have members except leader", strings.ToLower(q.action()))
	}
	if eligible == 0 {
		return bad(http.StatusPreconditionFailed, "%s is not possible: no good candidates have been found", strings.ToLower(q.action()))
	}
	return q, nil
}

func (s *Server) postSwitchover(w http.ResponseWriter, r *http.Request) { s.switchover(w, r, false) }
func (s *Server) postFailover(w http.ResponseWriter, r *http.Request)   { s.switchover(w, r, true) }

// switchover writes the failover key and, unless scheduled, waits until the leader key moves
// (200), the request is cleared without a change (503 failed), or the wait runs out (503 unknown).
func (s *Server) switchover(w http.ResponseWriter, r *http.Request, failover bool) {
	m, err := readObject(r, false)
	if err != nil {
		textError(w, http.StatusBadRequest, err.Error())
		return
	}
	v, err := s.freshView(r.Context())
	if err != nil {
		textError(w, http.StatusServiceUnavailable, "cannot read the store: "+err.Error())
		return
	}
	q, herr := parseSwitchover(m, failover, v, time.Now())
	if herr != nil {
		textError(w, herr.code, herr.msg)
		return
	}
	req := cluster.Failover{Leader: q.leader, Member: q.candidate, ScheduledAt: q.at}
	if err := s.o.Store.SetFailover(r.Context(), req); err != nil {
		textError(w, http.StatusServiceUnavailable, "failed to write failover key into DCS")
		return
	}
	if q.at != nil {
		textError(w, http.StatusAccepted, q.action()+" scheduled")
		return
	}
	from := ""
	if v.Leader != nil {
		from = v.Leader.Name
	}
	wait := max(30*time.Second, 2*v.Config.TTLDuration())
	deadline := time.Now().Add(wait)
	past := "switched over"
	if q.failover {
		past = "failed over"
	}
	for time.Now().Before(deadline) {
		select {
		case <-r.Context().Done():
			return
		case <-time.After(20 * time.Millisecond): // a range read on etcd: cheap enough to poll fast
		}
		cur, err := s.freshView(r.Context())
		if err != nil {
			continue
		}
		if cur.Leader != nil && cur.Leader.Name != from {
			switch {
			case q.candidate == "" || cur.Leader.Name == q.candidate:
				textError(w, http.StatusOK, fmt.Sprintf("Successfully %s to %q", past, cur.Leader.Name))
			default:
				textError(w, http.StatusOK, fmt.Sprintf("%s to %q instead of %q", strings.ToUpper(past[:1])+past[1:], cur.Leader.Name, q.candidate))
			}
			return
		}
		if cur.Failover == nil && (cur.Leader == nil || cur.Leader.Name == from) {
			// Cleared without a new leader: rejected by the leader (its log says why).
			if cur.Leader != nil {
				textError(w, http.StatusServiceUnavailable, q.action()+" failed")
				return
			}
		}
	}
	textError(w, http.StatusServiceUnavailable, fmt.Sprintf("%s status unknown after %d seconds; operation may still be in progress",
		q.action(), int(wait.Seconds())))
}

func (s *Server) deleteSwitchover(w http.ResponseWriter, r *http.Request) {
	v, err := s.freshView(r.Context())
	if err != nil {
		textError(w, http.StatusServiceUnavailable, "cannot read the store: "+err.Error())
		return
	}
	if v.Failover == nil || v.Failover.ScheduledAt == nil {
		textError(w, http.StatusNotFound, "no switchover is scheduled")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if err := s.o.Store.SetFailover(ctx, cluster.Failover{}); err != nil {
		textError(w, http.StatusServiceUnavailable, "failed to write failover key into DCS")
		return
	}
	textError(w, http.StatusOK, "scheduled switchover deleted")
}
