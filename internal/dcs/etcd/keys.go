package etcd

// The writes of the keys other than the lease-bound ones: initialize, config, failover, sync,
// failsafe, history and status.

import (
	"context"
	"encoding/json"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pgvigil/pgvigil/internal/cluster"
	"github.com/pgvigil/pgvigil/internal/dcs"
)

// createIfAbsent puts key=val only if the key has never existed since its last delete.
func (s *Store) createIfAbsent(ctx context.Context, cli *clientv3.Client, key, val string) (bool, error) {
	resp, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, val)).
		Commit()
	if err != nil {
		return false, err
	}
	return resp.Succeeded, nil
}

// CreateInitialize wins or loses the bootstrap race.
func (s *Store) CreateInitialize(ctx context.Context) error {
	ctx, cancel, cli, err := s.begin(ctx, "creating the initialize key")
	if err != nil {
		return err
	}
	defer cancel()
	ok, err := s.createIfAbsent(ctx, cli, s.key(dcs.KeyInitialize), "")
	if err != nil {
		return unavailable("creating the initialize key", err)
	}
	if !ok {
		return dcs.ErrExists
	}
	return nil
}

// SetInitialize records the system identifier.
func (s *Store) SetInitialize(ctx context.Context, sysid string) error {
	return s.put(ctx, "writing the initialize key", dcs.KeyInitialize, sysid)
}

// DeleteInitialize lets another member bootstrap after a failed attempt.
func (s *Store) DeleteInitialize(ctx context.Context) error {
	ctx, cancel, cli, err := s.begin(ctx, "deleting the initialize key")
	if err != nil {
		return err
	}
	defer cancel()
	if _, err := cli.Delete(ctx, s.key(dcs.KeyInitialize)); err != nil {
		return unavailable("deleting the initialize key", err)
	}
	return nil
}

// InitConfig writes the bootstrap config unless a config is already stored.
func (s *Store) InitConfig(ctx context.Context, c cluster.DynamicConfig) error {
	val, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("while encoding the dynamic config: %w", err)
	}
	ctx, cancel, cli, err := s.begin(ctx, "creating the config key")
	if err != nil {
		return err
	}
	defer cancel()
	if _, err := s.createIfAbsent(ctx, cli, s.key(dcs.KeyConfig), string(val)); err != nil {
		return unavailable("creating the config key", err)
	}
	return nil
}

// PutConfig writes the config key, compare-and-swap on its mod revision unless rev < 0.
func (s *Store) PutConfig(ctx context.Context, raw []byte, rev int64) error {
	ctx, cancel, cli, err := s.begin(ctx, "writing the config key")
	if err != nil {
		return err
	}
	defer cancel()
	key := s.key(dcs.KeyConfig)
	if rev < 0 {
		if _, err := cli.Put(ctx, key, string(raw)); err != nil {
			return unavailable("writing the config key", err)
		}
		return nil
	}
	resp, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
		Then(clientv3.OpPut(key, string(raw))).Commit()
	if err != nil {
		return unavailable("writing the config key", err)
	}
	if !resp.Succeeded {
		return dcs.ErrConflict
	}
	return nil
}

// SetFailover writes the failover key; a request with neither leader nor member becomes {}.
func (s *Store) SetFailover(ctx context.Context, f cluster.Failover) error {
	val := []byte("{}")
	if !f.Empty() {
		var err error
		if val, err = json.Marshal(f); err != nil {
			return fmt.Errorf("while encoding the failover key: %w", err)
		}
	}
	return s.put(ctx, "writing the failover key", dcs.KeyFailover, string(val))
}

// SetSync writes the sync key as Patroni 4 does ({"leader","sync_standby","quorum"}, sync_standby
// null when empty); nil deletes it.
func (s *Store) SetSync(ctx context.Context, sy *cluster.Sync) error {
	if sy == nil {
		ctx, cancel, cli, err := s.begin(ctx, "deleting the sync key")
		if err != nil {
			return err
		}
		defer cancel()
		if _, err := cli.Delete(ctx, s.key(dcs.KeySync)); err != nil {
			return unavailable("deleting the sync key", err)
		}
		return nil
	}
	var standby *string
	if sy.SyncStandby != "" {
		standby = &sy.SyncStandby
	}
	val, err := json.Marshal(struct {
		Leader      string  `json:"leader"`
		SyncStandby *string `json:"sync_standby"`
		Quorum      int     `json:"quorum"`
	}{sy.Leader, standby, sy.Quorum})
	if err != nil {
		return fmt.Errorf("while encoding the sync key: %w", err)
	}
	return s.put(ctx, "writing the sync key", dcs.KeySync, string(val))
}

// SetFailsafe writes the failsafe key as Patroni does: {"name": "api_url", …}.
func (s *Store) SetFailsafe(ctx context.Context, members map[string]string) error {
	val, err := json.Marshal(members)
	if err != nil {
		return fmt.Errorf("while encoding the failsafe key: %w", err)
	}
	return s.put(ctx, "writing the failsafe key", dcs.KeyFailsafe, string(val))
}

// SetHistory replaces the history key.
func (s *Store) SetHistory(ctx context.Context, h []cluster.HistoryEntry) error {
	if h == nil {
		h = []cluster.HistoryEntry{} // Patroni readers expect an array, not null
	}
	val, err := json.Marshal(h)
	if err != nil {
		return fmt.Errorf("while encoding the history: %w", err)
	}
	return s.put(ctx, "writing the history key", dcs.KeyHistory, string(val))
}

// SetStatus writes the leader's optime.
func (s *Store) SetStatus(ctx context.Context, st cluster.Status) error {
	val, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("while encoding the status: %w", err)
	}
	return s.put(ctx, "writing the status key", dcs.KeyStatus, string(val))
}

func (s *Store) put(ctx context.Context, doing, key, val string) error {
	ctx, cancel, cli, err := s.begin(ctx, doing)
	if err != nil {
		return err
	}
	defer cancel()
	if _, err := cli.Put(ctx, s.key(key), val); err != nil {
		return unavailable(doing, err)
	}
	return nil
}
