package proxy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// authQueryConns bounds the auth_query connections in use at once (and those kept idle):
// each lookup is one indexed query, so a few connections serve a storm of logins.
const authQueryConns = 4

// authQuerier looks up the password verifiers of users who are not in auth.file with
// auth.query, run as auth.user on the current primary (PgBouncer's auth_query). Each login
// asks again, so a password change or a dropped role takes effect at the next login; only
// the connections are reused.
type authQuerier struct {
	p     *Proxy
	slots chan struct{}
	mu    sync.Mutex
	idle  []*authConn
}

// authConn is an idle connection of auth.user, ready for the next lookup.
type authConn struct {
	li       *loggedIn
	addr, db string
	since    time.Time
}

func newAuthQuerier(p *Proxy) *authQuerier {
	return &authQuerier{p: p, slots: make(chan struct{}, authQueryConns)}
}

// errAuthQueryResult: the query ran but its answer cannot be used; the client is told the
// proxy could not check its password, not that it is wrong.
var errAuthQueryResult = errors.New("auth.query returned an unusable result")

// lookup returns the user's secret, or nil when the query finds no row, a NULL or an
// empty password: the caller treats all three like a wrong password, so a client cannot
// tell which users exist.
func (a *authQuerier) lookup(ctx context.Context, user, db string) (*secret, error) {
	be, err := a.p.router.authTarget(ctx)
	if err != nil {
		return nil, fmt.Errorf("no primary to run auth.query on: %s (%w)", a.p.router.why(false), err)
	}
	if a.p.cfg.Auth.DBName != "" {
		db = a.p.cfg.Auth.DBName
	}
	select {
	case a.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("while waiting for an auth_query connection: %w", ctx.Err())
	}
	defer func() { <-a.slots }()
	for attempt := 0; ; attempt++ {
		ac := a.take(be.addr, db)
		reused := ac != nil
		if ac == nil {
			li, err := a.p.serverLogin(ctx, loginSpec{addr: be.addr, user: a.p.cfg.Auth.User, db: db,
				params: map[string]string{"application_name": "pgvigil-proxy-auth"}})
			if err != nil {
				return nil, fmt.Errorf("while connecting as auth.user: %w", err)
			}
			ac = &authConn{li: li, addr: be.addr, db: db}
		}
		pw, found, err := ac.query(ctx, a.p.cfg.Auth.Query, user)
		var pe *pgconn.PgError
		switch {
		case err == nil || errors.As(err, &pe) || errors.Is(err, errAuthQueryResult):
			// The connection is in a clean state after ReadyForQuery whatever the answer.
			a.put(ac)
		default:
			_ = ac.li.conn.Close() // broken mid-query; the query's error is the one to report
			if reused && attempt == 0 {
				continue // an idle connection the server may have closed meanwhile: once more on a fresh one
			}
		}
		if err != nil {
			return nil, err
		}
		if !found || pw == "" {
			return nil, nil
		}
		sec, err := newSecret(user, pw)
		if err != nil {
			return nil, fmt.Errorf("%w: the password of user %q: %w", errAuthQueryResult, user, err)
		}
		return sec, nil
	}
}

// authTarget returns the confirmed primary, waiting for one until ctx ends. Unlike client
// transactions, lookups go on during a planned switchover's drain and an operator's pause:
// reading a password verifier is no client work, and logins should not stall on it.
func (r *router) authTarget(ctx context.Context) (*backend, error) {
	for {
		r.mu.Lock()
		be, ch := r.primary, r.changed
		r.mu.Unlock()
		if be != nil && !be.isRetired() {
			return be, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// reap closes idle connections past server_idle_timeout (the proxy's reaper calls it).
func (a *authQuerier) reap(now time.Time) {
	a.mu.Lock()
	keep := a.idle[:0]
	var drop []*authConn
	for _, ac := range a.idle {
		if now.Sub(ac.since) > a.p.cfg.ServerIdleTimeout.D() {
			drop = append(drop, ac)
		} else {
			keep = append(keep, ac)
		}
	}
	clear(a.idle[len(keep):])
	a.idle = keep
	a.mu.Unlock()
	for _, ac := range drop {
		ac.terminate()
	}
}

// take returns an idle connection to addr and db, closing those that lead to an old primary
// or sat idle past server_idle_timeout.
func (a *authQuerier) take(addr, db string) *authConn {
	a.mu.Lock()
	defer a.mu.Unlock()
	var found *authConn
	keep := a.idle[:0]
	for _, ac := range a.idle {
		switch {
		case ac.addr != addr || time.Since(ac.since) > a.p.cfg.ServerIdleTimeout.D():
			go ac.terminate()
		case found == nil && ac.db == db:
			found = ac
		default:
			keep = append(keep, ac)
		}
	}
	clear(a.idle[len(keep):])
	a.idle = keep
	return found
}

func (a *authQuerier) put(ac *authConn) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.idle) >= authQueryConns {
		go ac.terminate()
		return
	}
	ac.since = time.Now()
	a.idle = append(a.idle, ac)
}

// close ends every idle connection (the proxy is stopping).
func (a *authQuerier) close() {
	a.mu.Lock()
	idle := slices.Clone(a.idle)
	a.idle = nil
	a.mu.Unlock()
	for _, ac := range idle {
		ac.terminate()
	}
}

func (ac *authConn) terminate() {
	_ = ac.li.conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = ac.li.conn.Write([]byte{'X', 0, 0, 0, 4})
	_ = ac.li.conn.Close() // best effort: Terminate was a courtesy
}

// query runs auth.query with the user name bound as $1 (extended protocol: the name is
// never part of the SQL text) and returns the second column of the only row.
func (ac *authConn) query(ctx context.Context, q, user string) (string, bool, error) {
	conn, rd := ac.li.conn, ac.li.rd
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
		defer func() { _ = conn.SetDeadline(time.Time{}) }()
	}
	buf, err := (&pgproto3.Parse{Query: q}).Encode(nil)
	if err == nil {
		buf, err = (&pgproto3.Bind{Parameters: [][]byte{[]byte(user)}}).Encode(buf)
	}
	if err == nil {
		buf, err = (&pgproto3.Execute{}).Encode(buf)
	}
	if err == nil {
		buf, err = (&pgproto3.Sync{}).Encode(buf)
	}
	if err != nil {
		return "", false, fmt.Errorf("while encoding auth.query: %w", err)
	}
	if _, err := conn.Write(buf); err != nil {
		return "", false, fmt.Errorf("while sending auth.query: %w", err)
	}
	var (
		rows    int
		pw      string
		qerr    error
		badCols int
		row     pgproto3.DataRow
	)
	for {
		typ, n, err := rd.next()
		if err != nil {
			return "", false, fmt.Errorf("while reading the answer to auth.query: %w", err)
		}
		body, err := rd.body(n)
		if err != nil {
			return "", false, fmt.Errorf("while reading the answer to auth.query: %w", err)
		}
		switch typ {
		case 'D':
			rows++
			if err := row.Decode(body); err != nil {
				return "", false, fmt.Errorf("while decoding a row of auth.query: %w", err)
			}
			if len(row.Values) != 2 {
				badCols = len(row.Values)
			} else if rows == 1 {
				pw = string(row.Values[1]) // NULL decodes as nil: no password, no login
			}
		case 'E':
			var e pgproto3.ErrorResponse
			if err := e.Decode(body); err != nil {
				return "", false, fmt.Errorf("while decoding an error of auth.query: %w", err)
			}
			qerr = pgconn.ErrorResponseToPgError(&e)
		case 'Z':
			switch {
			case qerr != nil:
				return "", false, fmt.Errorf("auth.query failed: %w", qerr)
			case badCols != 0:
				return "", false, fmt.Errorf("%w: %d columns, want 2 (user name, password)", errAuthQueryResult, badCols)
			case rows > 1:
				return "", false, fmt.Errorf("%w: %d rows for user %q, want at most one", errAuthQueryResult, rows, user)
			}
			return pw, rows == 1, nil
		case '1', '2', 'C', 'n', 'I', 'N', 'S', 'T':
		default:
			return "", false, fmt.Errorf("unexpected message %q in the answer to auth.query", typ)
		}
	}
}

// authQueryFailed tells the client its password could not be checked, and logs why: 28000
// when the server refused the auth user or the query (a configuration matter), 08006 when no
// primary could be reached.
func (c *client) authQueryFailed(err error) {
	c.p.log.Warn("auth_query lookup failed; refusing the client", "client", c.addr, "user", c.user, "database", c.db, "err", err)
	var pe *pgconn.PgError
	if errors.As(err, &pe) || errors.Is(err, errAuthQueryResult) {
		c.fatal("28000", fmt.Sprintf("could not check the password of user %q: auth_query failed (the proxy's log says why)", c.user))
		return
	}
	c.fatal("08006", fmt.Sprintf("could not check the password of user %q: cannot reach the primary to run auth_query", c.user))
}
