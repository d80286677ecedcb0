// Package etcd implements dcs.Store on etcd v3 with Patroni's key layout and value formats.
package etcd

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/pgvigil/pgvigil/internal/cluster"
	"github.com/pgvigil/pgvigil/internal/dcs"
)

var _ dcs.Store = (*Store)(nil)

// watchBackoff spaces out attempts to re-establish a broken leader watch.
const watchBackoff = 200 * time.Millisecond

// keyOptimeLeader is the pre-2.1 Patroni spelling of the leader optime, read only when status is absent.
const keyOptimeLeader = "optime/leader"

// Config describes how to reach etcd and which member this store belongs to.
type Config struct {
	Endpoints []string // host:port or URL; "http://" is assumed without a scheme ("https://" with TLS)
	// TLS, when set, secures every connection: endpoints without a scheme get https://, and an
	// http:// endpoint is refused. It carries the trusted CAs and the client certificate. With
	// https:// endpoints and no TLS, the system's CAs are trusted.
	TLS                *tls.Config
	Username, Password string
	Namespace, Scope   string
	Name               string // the member owning this store's lease
	TTL                time.Duration
	RetryTimeout       time.Duration // bound for every call, and the dial timeout
	Logger             *slog.Logger
}

// Store is a dcs.Store for one member. It is safe for concurrent use.
type Store struct {
	cfg     clientv3.Config
	log     *slog.Logger
	prefix  string
	name    string
	ttl     int64 // lease TTL in whole seconds
	timeout time.Duration

	// cliMu guards the lazily created client: with authentication, clientv3.New fetches a token
	// and so would block or fail while etcd is down, and New must not.
	cliMu  sync.Mutex
	cli    *clientv3.Client
	closed bool

	// leaseMu serialises the calls that may replace the lease, so that two of them racing
	// never grant two leases and strand keys on the loser.
	leaseMu sync.Mutex
	lease   clientv3.LeaseID // 0: none granted yet, or revoked
	member  []byte           // last member value written, re-put when the lease is replaced
}

// New validates cfg and returns a Store. It does not contact etcd, so an unreachable store
// surfaces as ErrUnavailable from the first call rather than as a startup failure.
func New(cfg Config) (*Store, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("while configuring etcd: no endpoints")
	}
	if strings.Trim(cfg.Scope, "/") == "" {
		return nil, errors.New("while configuring etcd: empty scope")
	}
	if cfg.Name == "" || strings.Contains(cfg.Name, "/") {
		return nil, fmt.Errorf("while configuring etcd: invalid member name %q", cfg.Name)
	}
	if cfg.TTL < 0 || cfg.RetryTimeout < 0 {
		return nil, errors.New("while configuring etcd: negative ttl or retry timeout")
	}
	def := cluster.DefaultDynamicConfig()
	if cfg.TTL == 0 {
		cfg.TTL = def.TTLDuration()
	}
	if cfg.RetryTimeout == 0 {
		cfg.RetryTimeout = def.RetryDuration()
	}
	eps := make([]string, 0, len(cfg.Endpoints))
	for _, ep := range cfg.Endpoints {
		ep = strings.TrimSpace(ep)
		if !strings.Contains(ep, "://") {
			if cfg.TLS != nil {
				ep = "https://" + ep
			} else {
				ep = "http://" + ep
			}
		}
		u, err := url.Parse(ep)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("while configuring etcd: invalid endpoint %q", ep)
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return nil, fmt.Errorf("while configuring etcd: endpoint %q: scheme must be http or https", ep)
		}
		eps = append(eps, ep)
	}
	for _, ep := range eps {
		if strings.HasPrefix(ep, "https://") && cfg.TLS == nil {
			cfg.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
		}
	}
	if cfg.TLS != nil {
		for _, ep := range eps {
			if strings.HasPrefix(ep, "http://") {
				return nil, fmt.Errorf("while configuring etcd: endpoint %q is plain http while the others use TLS", ep)
			}
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Store{
		cfg: clientv3.Config{
			Endpoints:   eps,
			Username:    cfg.Username,
			Password:    cfg.Password,
			TLS:         cfg.TLS,
			DialTimeout: cfg.RetryTimeout,
			// Pings find a dead connection while a watch or keepalive stream is open; etcd
			// rejects clients that ping more often than every 5 s.
			DialKeepAliveTime:    10 * time.Second,
			DialKeepAliveTimeout: cfg.RetryTimeout,
			// AutoSyncInterval stays 0: syncing would swap the configured endpoints for the
			// members' advertised URLs, which are not always reachable from here.
			//
			// Errors come back to the caller wrapped; the client's own retry chatter is noise.
			Logger: zap.NewNop(),
		},
		log:     log.With("component", "dcs/etcd"),
		prefix:  dcs.Prefix(cfg.Namespace, cfg.Scope),
		name:    cfg.Name,
		ttl:     max(1, int64(math.Ceil(cfg.TTL.Seconds()))),
		timeout: cfg.RetryTimeout,
	}, nil
}

// Lease returns the id of the member's current lease, 0 when none is held.
func (s *Store) Lease() int64 {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	return int64(s.lease)
}

// Close releases the client. The lease is left to expire so a restarted agent can still find
// the leader key naming it (RenewLeader moves it onto the new lease).
func (s *Store) Close() error {
	s.cliMu.Lock()
	defer s.cliMu.Unlock()
	s.closed = true
	if s.cli == nil {
		return nil
	}
	err := s.cli.Close()
	s.cli = nil
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("while closing the etcd client: %w", err)
	}
	return nil
}

var errClosed = errors.New("store is closed")

func (s *Store) client() (*clientv3.Client, error) {
	s.cliMu.Lock()
	defer s.cliMu.Unlock()
	if s.closed {
		return nil, errClosed
	}
	if s.cli == nil {
		cli, err := clientv3.New(s.cfg)
		if err != nil {
			return nil, err
		}
		s.cli = cli
	}
	return s.cli, nil
}

func (s *Store) key(k string) string { return s.prefix + k }

func (s *Store) leaderKey() string { return s.prefix + dcs.KeyLeader }

func (s *Store) memberKey() string { return s.prefix + dcs.KeyMembers + s.name }

func unavailable(doing string, err error) error {
	return fmt.Errorf("while %s: %w: %w", doing, dcs.ErrUnavailable, err)
}

func isLeaseNotFound(err error) bool {
	return errors.Is(err, rpctypes.ErrLeaseNotFound) || errors.Is(err, rpctypes.ErrGRPCLeaseNotFound)
}

// begin bounds a call by the retry timeout and hands out the client.
func (s *Store) begin(ctx context.Context, doing string) (context.Context, context.CancelFunc, *clientv3.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	cli, err := s.client()
	if err != nil {
		cancel()
		return nil, nil, nil, unavailable(doing, err)
	}
	return ctx, cancel, cli, nil
}

// Get reads the whole cluster prefix in a single linearizable range request.
func (s *Store) Get(ctx context.Context) (*cluster.View, error) {
	ctx, cancel, cli, err := s.begin(ctx, "reading the cluster state")
	if err != nil {
		return nil, err
	}
	defer cancel()
	resp, err := cli.Get(ctx, s.prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, unavailable("reading the cluster state", err)
	}
	v := &cluster.View{Revision: resp.Header.Revision, Config: cluster.DefaultDynamicConfig()}
	var legacyOptime *int64
	hasStatus := false
	for _, kv := range resp.Kvs {
		k := strings.TrimPrefix(string(kv.Key), s.prefix)
		switch {
		case k == dcs.KeyLeader:
			v.Leader = &cluster.Leader{Name: string(kv.Value), Lease: kv.Lease, ModRevision: kv.ModRevision}
		case strings.HasPrefix(k, dcs.KeyMembers):
			name := strings.TrimPrefix(k, dcs.KeyMembers)
			if name == "" || strings.Contains(name, "/") {
				continue
			}
			// Patroni omits tags when none are set; its default priority is 1, not 0.
			m := cluster.Member{Tags: cluster.Tags{FailoverPriority: 1}}
			if err := json.Unmarshal(kv.Value, &m); err != nil {
				s.log.Warn("skipping malformed member key", "key", string(kv.Key), "err", err)
				continue
			}
			m.Name = name
			v.Members = append(v.Members, m)
		case k == dcs.KeyInitialize:
			sysid := string(kv.Value)
			v.Initialize = &sysid
		case k == dcs.KeyConfig:
			v.Config, v.HasConfig = s.parseConfig(kv.Value)
			v.ConfigRaw, v.ConfigRevision = kv.Value, kv.ModRevision
		case k == dcs.KeySync:
			var sy struct {
				Leader      string  `json:"leader"`
				SyncStandby *string `json:"sync_standby"`
				Quorum      int     `json:"quorum"`
			}
			if err := json.Unmarshal(kv.Value, &sy); err != nil {
				s.log.Warn("skipping malformed sync key", "key", string(kv.Key), "err", err)
				continue
			}
			v.Sync = &cluster.Sync{Leader: sy.Leader, Quorum: sy.Quorum}
			if sy.SyncStandby != nil {
				v.Sync.SyncStandby = *sy.SyncStandby
			}
		case k == dcs.KeyFailsafe:
			var fs map[string]string
			if err := json.Unmarshal(kv.Value, &fs); err != nil {
				s.log.Warn("skipping malformed failsafe key", "key", string(kv.Key), "err", err)
				continue
			}
			v.Failsafe = fs
		case k == dcs.KeyFailover:
			var f cluster.Failover
			if err := json.Unmarshal(kv.Value, &f); err != nil {
				s.log.Warn("skipping malformed failover key", "key", string(kv.Key), "err", err)
				continue
			}
			if !f.Empty() {
				v.Failover = &f
			}
		case k == dcs.KeyHistory:
			var h []cluster.HistoryEntry
			if err := json.Unmarshal(kv.Value, &h); err != nil {
				s.log.Warn("skipping malformed history key", "key", string(kv.Key), "err", err)
				continue
			}
			v.History = h
		case k == dcs.KeyStatus:
			var st cluster.Status
			if err := json.Unmarshal(kv.Value, &st); err != nil {
				s.log.Warn("skipping malformed status key", "key", string(kv.Key), "err", err)
				continue
			}
			v.Status, hasStatus = st, true
		case k == keyOptimeLeader:
			if n, err := strconv.ParseInt(strings.TrimSpace(string(kv.Value)), 10, 64); err == nil {
				legacyOptime = &n
			}
		}
	}
	if !hasStatus && legacyOptime != nil {
		v.Status.Optime = *legacyOptime
	}
	cluster.SortMembers(v.Members)
	return v, nil
}

// parseConfig lays the stored config over the defaults, so settings it omits keep them.
func (s *Store) parseConfig(b []byte) (cluster.DynamicConfig, bool) {
	c := cluster.DefaultDynamicConfig()
	err := json.Unmarshal(b, &c)
	if err == nil {
		return c, true
	}
	// A wrongly typed field (a hand edit writing "ttl": "30") leaves the rest decoded and
	// that one field at its default, which beats discarding the whole config.
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		s.log.Warn("config key has a wrongly typed field; using the default for it", "err", err)
		return c, true
	}
	s.log.Warn("skipping malformed config key; using defaults", "err", err)
	return cluster.DefaultDynamicConfig(), false
}

// grant replaces the lease with a fresh one. When reput is set the last member value is
// written onto it, because the member key vanished with the old lease.
// The caller holds leaseMu.
func (s *Store) grant(ctx context.Context, cli *clientv3.Client, reput bool) error {
	resp, err := cli.Grant(ctx, s.ttl)
	if err != nil {
		return unavailable("granting a lease", err)
	}
	if s.lease != 0 {
		s.log.Info("lease replaced", "old", int64(s.lease), "new", int64(resp.ID))
	}
	s.lease = resp.ID
	if reput && s.member != nil {
		if _, err := cli.Put(ctx, s.memberKey(), string(s.member), clientv3.WithLease(s.lease)); err != nil {
			return unavailable("writing the member key on a new lease", err)
		}
	}
	return nil
}

// SetTTL applies a new ttl from the dynamic configuration: the next renewal grants a lease with
// it and moves the member key (and the leader key, see RenewLeader) onto it. The old lease is
// left to expire, so no key disappears in between.
func (s *Store) SetTTL(ttl time.Duration) {
	secs := max(1, int64(math.Ceil(ttl.Seconds())))
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	if secs == s.ttl {
		return
	}
	s.log.Info("ttl changed: the next renewal moves the keys to a new lease", "old", s.ttl, "new", secs)
	s.ttl, s.lease = secs, 0
}

// ensureLease grants a lease when none is held. The caller holds leaseMu.
func (s *Store) ensureLease(ctx context.Context, cli *clientv3.Client) error {
	if s.lease != 0 {
		return nil
	}
	return s.grant(ctx, cli, true)
}

// TouchMember writes the member key on the member's lease.
func (s *Store) TouchMember(ctx context.Context, m cluster.Member) error {
	val, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("while encoding member %s: %w", s.name, err)
	}
	ctx, cancel, cli, err := s.begin(ctx, "writing the member key")
	if err != nil {
		return err
	}
	defer cancel()
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	// Remember it even if the put fails, so a later lease replacement writes the newest value.
	s.member = val
	if err := s.ensureLease(ctx, cli); err != nil {
		return err
	}
	_, err = cli.Put(ctx, s.memberKey(), string(val), clientv3.WithLease(s.lease))
	if isLeaseNotFound(err) {
		if err := s.grant(ctx, cli, false); err != nil {
			return err
		}
		_, err = cli.Put(ctx, s.memberKey(), string(val), clientv3.WithLease(s.lease))
	}
	if err != nil {
		return unavailable("writing the member key", err)
	}
	return nil
}

// KeepAlive refreshes the lease once; renewed is false when the lease had to be replaced.
func (s *Store) KeepAlive(ctx context.Context) (bool, error) {
	ctx, cancel, cli, err := s.begin(ctx, "refreshing the lease")
	if err != nil {
		return false, err
	}
	defer cancel()
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	return s.keepAlive(ctx, cli)
}

// keepAlive is KeepAlive for callers already holding leaseMu.
func (s *Store) keepAlive(ctx context.Context, cli *clientv3.Client) (bool, error) {
	if s.lease == 0 {
		return false, s.grant(ctx, cli, true)
	}
	_, err := cli.KeepAliveOnce(ctx, s.lease)
	if isLeaseNotFound(err) {
		s.log.Warn("lease expired; granting a new one", "lease", int64(s.lease))
		return false, s.grant(ctx, cli, true)
	}
	if err != nil {
		return false, unavailable("refreshing the lease", err)
	}
	return true, nil
}

// AcquireLeader creates the leader key on the member's lease if nobody holds it.
func (s *Store) AcquireLeader(ctx context.Context) error {
	ctx, cancel, cli, err := s.begin(ctx, "acquiring the leader key")
	if err != nil {
		return err
	}
	defer cancel()
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	if err := s.ensureLease(ctx, cli); err != nil {
		return err
	}
	acquire := func() (*clientv3.TxnResponse, error) {
		return cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(s.leaderKey()), "=", 0)).
			Then(clientv3.OpPut(s.leaderKey(), s.name, clientv3.WithLease(s.lease))).
			Commit()
	}
	resp, err := acquire()
	if isLeaseNotFound(err) {
		if err := s.grant(ctx, cli, true); err != nil {
			return err
		}
		resp, err = acquire()
	}
	if err != nil {
		return unavailable("acquiring the leader key", err)
	}
	if !resp.Succeeded {
		return dcs.ErrExists
	}
	// The lease's countdown started at its last keepalive, possibly up to a loop ago; restart it
	// now so that the key lives at least ttl from the moment the caller sent this request.
	if _, err := s.keepAlive(ctx, cli); err != nil {
		return err
	}
	return nil
}

// RenewLeader refreshes the lease and checks the leader key still names this member,
// moving it onto the current lease when it rides on an older one.
func (s *Store) RenewLeader(ctx context.Context) error {
	ctx, cancel, cli, err := s.begin(ctx, "renewing the leader key")
	if err != nil {
		return err
	}
	defer cancel()
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	// A replaced lease is fine here: if the leader key died with the old one, the
	// compare below reports it; if it lives on another lease of ours, it is moved.
	if _, err := s.keepAlive(ctx, cli); err != nil {
		return err
	}
	lk := s.leaderKey()
	resp, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.Value(lk), "=", s.name),
			clientv3.Compare(clientv3.LeaseValue(lk), "=", s.lease)).
		Else(clientv3.OpGet(lk)).
		Commit()
	if err != nil {
		return unavailable("renewing the leader key", err)
	}
	if resp.Succeeded {
		return nil
	}
	kvs := resp.Responses[0].GetResponseRange().GetKvs()
	if len(kvs) == 0 || string(kvs[0].Value) != s.name {
		return dcs.ErrNotLeader
	}
	// Ours, but on a lease from before an agent restart that will expire unrenewed.
	moved, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.Value(lk), "=", s.name)).
		Then(clientv3.OpPut(lk, s.name, clientv3.WithLease(s.lease))).
		Commit()
	if err != nil {
		return unavailable("moving the leader key onto the current lease", err)
	}
	if !moved.Succeeded {
		return dcs.ErrNotLeader
	}
	s.log.Info("leader key moved onto the current lease", "old", kvs[0].Lease, "new", int64(s.lease))
	return nil
}

// ReleaseLeader deletes the leader key if it names this member.
func (s *Store) ReleaseLeader(ctx context.Context) error {
	ctx, cancel, cli, err := s.begin(ctx, "releasing the leader key")
	if err != nil {
		return err
	}
	defer cancel()
	lk := s.leaderKey()
	_, err = cli.Txn(ctx).
		If(clientv3.Compare(clientv3.Value(lk), "=", s.name)).
		Then(clientv3.OpDelete(lk)).
		Commit()
	if err != nil {
		return unavailable("releasing the leader key", err)
	}
	return nil
}

// DeleteMember removes the member key and revokes the lease, which also drops the leader key
// if this member held it.
func (s *Store) DeleteMember(ctx context.Context) error {
	ctx, cancel, cli, err := s.begin(ctx, "deleting the member key")
	if err != nil {
		return err
	}
	defer cancel()
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	if _, err := cli.Delete(ctx, s.memberKey()); err != nil {
		return unavailable("deleting the member key", err)
	}
	// Forget the value so a later KeepAlive does not resurrect the key.
	s.member = nil
	if s.lease == 0 {
		return nil
	}
	if _, err := cli.Revoke(ctx, s.lease); err != nil && !isLeaseNotFound(err) {
		return unavailable("revoking the lease", err)
	}
	s.lease = 0
	return nil
}
