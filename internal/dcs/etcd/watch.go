package etcd

import (
	"context"
	"errors"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pgvigil/pgvigil/internal/dcs"
)

// Watch notifies on every change of the leader or failover key until ctx ends. The watch is re-established
// after errors, resuming from the last seen revision so no change in the gap goes unnoticed.
// It also notifies each time a watch is in place: a change may have come between the caller's
// last read and that moment, and a spare wake-up only costs the reader one more read.
func (s *Store) Watch(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	notify := func() {
		select {
		case ch <- struct{}{}:
		default: // a notification is already pending; the reader re-reads everything anyway
		}
	}
	go func() {
		defer close(ch)
		var next int64 // revision to resume from; 0 watches from now
		for ctx.Err() == nil {
			cli, err := s.client()
			if errors.Is(err, errClosed) {
				return
			}
			if err == nil {
				next = s.watchOnce(ctx, cli, next, notify)
			} else {
				s.log.Debug("cannot watch the leader key yet", "err", err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(watchBackoff):
			}
		}
	}()
	return ch
}

// watchOnce runs one watch until it breaks and returns the revision to resume from.
func (s *Store) watchOnce(ctx context.Context, cli *clientv3.Client, from int64, notify func()) int64 {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	opts := []clientv3.OpOption{clientv3.WithCreatedNotify()}
	if from > 0 {
		opts = append(opts, clientv3.WithRev(from))
	}
	opts = append(opts, clientv3.WithPrefix())
	for resp := range cli.Watch(wctx, s.prefix, opts...) {
		if resp.CompactRevision > 0 {
			// Changes since from were compacted away; something may have happened, so say so.
			notify()
			return 0
		}
		if err := resp.Err(); err != nil {
			if ctx.Err() == nil {
				s.log.Warn("leader watch broke; re-establishing", "err", err)
			}
			return from
		}
		// Member keys change every loop on every node; only the keys that call for a
		// decision wake the loop.
		wake := resp.Created
		for _, ev := range resp.Events {
			switch strings.TrimPrefix(string(ev.Kv.Key), s.prefix) {
			case dcs.KeyLeader, dcs.KeyFailover:
				wake = true
			}
		}
		if wake {
			notify()
		}
		if resp.Header.Revision > 0 {
			from = resp.Header.Revision + 1
		}
	}
	return from
}
