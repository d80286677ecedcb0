// Package dcs is the distributed configuration store: the interface the agent needs, its errors,
// and the Patroni-compatible key layout under <namespace>/<scope>/.
package dcs

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/pgvigil/pgvigil/internal/cluster"
)

// Sentinel errors. Callers branch on them with errors.Is.
var (
	// ErrNotLeader: the leader key is absent or held by someone else; the caller is not the leader.
	ErrNotLeader = errors.New("leader key is not held by this member")
	// ErrExists: a create-if-absent found the key already there.
	ErrExists = errors.New("key already exists")
	// ErrUnavailable wraps any failure to reach the store within the retry timeout.
	ErrUnavailable = errors.New("store unavailable")
	// ErrConflict: a compare-and-swap found the key changed since it was read.
	ErrConflict = errors.New("key changed since it was read")
)

// Store is what a node agent needs from the store. One Store belongs to one member and owns
// that member's lease: the member key and, while held, the leader key are attached to it.
//
// Every method is bounded by the retry timeout given at construction and returns an error
// wrapping ErrUnavailable when the store cannot be reached in that time.
type Store interface {
	// Get reads the whole cluster prefix in one consistent read.
	Get(ctx context.Context) (*cluster.View, error)

	// TouchMember writes members/<name> attached to the member's lease, granting a new lease
	// first when there is none or the old one has expired.
	TouchMember(ctx context.Context, m cluster.Member) error

	// KeepAlive refreshes the member's lease once. It returns ErrNotLeader-free errors only;
	// a lease that expired is replaced by a fresh one (and the member key must be touched again).
	KeepAlive(ctx context.Context) (renewed bool, err error)

	// AcquireLeader creates the leader key with the member's name, attached to its lease,
	// only if the key is absent. It returns ErrExists when someone holds it.
	AcquireLeader(ctx context.Context) error

	// RenewLeader refreshes the lease and checks, in one compare-and-swap, that the leader key
	// still names this member; if it names this member but rides on an older lease (agent
	// restart), it is moved onto the current lease. ErrNotLeader when the key is gone or
	// someone else's.
	RenewLeader(ctx context.Context) error

	// ReleaseLeader deletes the leader key only if it names this member. Idempotent.
	ReleaseLeader(ctx context.Context) error

	// DeleteMember removes members/<name> and revokes the member's lease (graceful stop).
	DeleteMember(ctx context.Context) error

	// CreateInitialize creates the initialize key with value "" if absent (the bootstrap race).
	// ErrExists when another member won.
	CreateInitialize(ctx context.Context) error
	// SetInitialize records the system identifier in the initialize key.
	SetInitialize(ctx context.Context, sysid string) error
	// DeleteInitialize removes the initialize key after a failed bootstrap so another may try.
	DeleteInitialize(ctx context.Context) error

	// InitConfig writes the config key only if absent (bootstrap.dcs).
	InitConfig(ctx context.Context, c cluster.DynamicConfig) error
	// PutConfig writes the config key as given. With rev >= 0 it is a compare-and-swap on the
	// key's mod revision read earlier (0: the key must be absent) and returns ErrConflict when
	// someone else wrote in between; with rev < 0 it writes unconditionally.
	PutConfig(ctx context.Context, raw []byte, rev int64) error
	// SetFailover writes the failover key; an empty request is written as {} (Patroni's "done").
	SetFailover(ctx context.Context, f cluster.Failover) error
	// SetSync writes the sync key; nil deletes it (synchronous_mode off).
	SetSync(ctx context.Context, s *cluster.Sync) error
	// SetFailsafe writes the failsafe key: member name → REST API URL.
	SetFailsafe(ctx context.Context, members map[string]string) error
	// SetHistory replaces the history key.
	SetHistory(ctx context.Context, h []cluster.HistoryEntry) error
	// SetStatus writes the status key (leader optime).
	SetStatus(ctx context.Context, s cluster.Status) error

	// Watch sends on the returned channel (capacity 1, never blocking the store) whenever the
	// leader or failover key changes or is deleted, until ctx ends.
	Watch(ctx context.Context) <-chan struct{}

	// SetTTL changes the lease ttl (dynamic configuration); keys move to a new lease at the
	// next renewal without disappearing.
	SetTTL(ttl time.Duration)

	// Close releases the client; it does not revoke the lease.
	Close() error
}

// Keys under the cluster prefix, as Patroni names them.
const (
	KeyLeader     = "leader"
	KeyMembers    = "members/"
	KeyConfig     = "config"
	KeyInitialize = "initialize"
	KeyHistory    = "history"
	KeyStatus     = "status"
	KeySync       = "sync"
	KeyFailover   = "failover"
	KeyFailsafe   = "failsafe"
)

// Prefix returns "<namespace>/<scope>/" with exactly one slash between parts,
// for namespaces written "/service", "/service/" or "service".
func Prefix(namespace, scope string) string {
	ns := "/" + strings.Trim(namespace, "/")
	if ns == "/" {
		ns = ""
	}
	return ns + "/" + strings.Trim(scope, "/") + "/"
}
