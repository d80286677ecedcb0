package agent

import (
	"context"
	"errors"
	"time"

	"github.com/pgvigil/pgvigil/internal/ha"
)

// Errors the REST API turns into answers.
var (
	ErrBusy             = errors.New("another operation is in progress")
	ErrAlreadyScheduled = errors.New("another restart is already scheduled")
	ErrNotTaken         = errors.New("the request was not carried out in time")
)

// request is an operator's request waiting for the loop: a restart or a reinitialization.
type request struct {
	kind    ha.Kind
	at      time.Time // due time; zero: now
	waiters []chan error
}

// Restart asks the loop to restart PostgreSQL now and waits for the outcome, bounded by ctx.
func (a *Agent) Restart(ctx context.Context) error {
	return a.submit(ctx, ha.Restart, time.Time{}, true)
}

// Reinitialize asks the loop to wipe and re-clone this member; it returns once the loop has
// started the work (or refused it), not when the copy is done.
func (a *Agent) Reinitialize(ctx context.Context) error {
	return a.submit(ctx, ha.Reinit, time.Time{}, false)
}

// ScheduleRestart records a restart for at; one may be pending at a time.
func (a *Agent) ScheduleRestart(at time.Time) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.req != nil {
		return ErrAlreadyScheduled
	}
	a.req = &request{kind: ha.Restart, at: at}
	return nil
}

// ScheduledRestart reports the pending scheduled restart, if any.
func (a *Agent) ScheduledRestart() (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.req == nil || a.req.kind != ha.Restart || a.req.at.IsZero() {
		return time.Time{}, false
	}
	return a.req.at, true
}

// CancelScheduledRestart drops a pending scheduled restart and reports whether there was one.
func (a *Agent) CancelScheduledRestart() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.req == nil || a.req.at.IsZero() {
		return false
	}
	a.req = nil
	return true
}

// Reload asks the loop to re-render the configuration and reload PostgreSQL in its next cycle.
func (a *Agent) Reload() {
	a.mu.Lock()
	a.forceReload = true
	a.mu.Unlock()
	a.Wake()
}

// submit queues a request and waits: until it finished (wait) or was started by the loop.
func (a *Agent) submit(ctx context.Context, kind ha.Kind, at time.Time, wait bool) error {
	done := make(chan error, 1)
	a.mu.Lock()
	if a.req != nil || a.busy != nil {
		a.mu.Unlock()
		return ErrBusy
	}
	a.req = &request{kind: kind, at: at, waiters: []chan error{done}}
	a.waitStart = !wait
	a.mu.Unlock()
	a.Wake()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		a.mu.Lock()
		if a.req != nil && len(a.req.waiters) > 0 && a.req.waiters[0] == done {
			a.req = nil // never started: withdraw it
		}
		a.mu.Unlock()
		return ErrNotTaken
	}
}

// dueRequest returns the pending request as an action if it is due.
func (a *Agent) dueRequest(now time.Time) *ha.Action {
	if a.req == nil || (!a.req.at.IsZero() && now.Before(a.req.at)) {
		return nil
	}
	return &ha.Action{Kind: a.req.kind}
}

// takeRequest hands the waiters of a request the loop is starting to the long action,
// answering at once those that only wanted to know it started. Callers hold a.mu.
func (a *Agent) takeRequest(kind ha.Kind) []chan error {
	if a.req == nil || a.req.kind != kind {
		return nil
	}
	w := a.req.waiters
	a.req = nil
	if a.waitStart {
		for _, c := range w {
			c <- nil
		}
		return nil
	}
	return w
}

// refuseRequest answers the waiters of a request that Decide turned down this cycle.
func (a *Agent) refuseRequest(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.req == nil {
		return
	}
	for _, c := range a.req.waiters {
		c <- err
	}
	a.req = nil
}
