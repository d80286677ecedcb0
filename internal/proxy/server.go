package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"strings"
	"sync"
	"time"
)

// trackedParams are the session settings the proxy carries from client to server in
// transaction mode: PostgreSQL reports each of them (GUC_REPORT), so their values are known
// without asking, and a client that changes one with SET is followed.
var trackedParams = []string{"application_name", "client_encoding", "DateStyle", "IntervalStyle", "TimeZone", "standard_conforming_strings"}

// maxPreparedPerServer bounds the statements left on a server by clients that came and went;
// past it the next attach clears them with DEALLOCATE ALL.
const maxPreparedPerServer = 1000

// maxCancelKeyLen is PostgreSQL's bound on a cancel key (256 bytes, protocol 3.2).
const maxCancelKeyLen = 256

// maxSettingLen bounds a session setting the proxy replays with SET on attach. The tracked
// settings are short (names of encodings, time zones, styles; application_name is cut to 63
// bytes by the server); a longer value is left alone rather than sent.
const maxSettingLen = 64 << 10

// op is a response the server goroutine must recognise in the stream: an internal query whose
// whole answer is swallowed, or a Parse whose ParseComplete belongs to the proxy or the client.
type op struct {
	internal bool
	swallow  bool   // a Parse the proxy injected: its ParseComplete is not the client's
	name     string // server-side statement name ("" for the unnamed statement)
	seg      uint64 // the Sync number that ends the segment the Parse was sent in
}

// server is one connection to PostgreSQL. A goroutine reads it for life and forwards to
// whichever client is attached; the attached client's goroutine writes to it.
type server struct {
	pool    *pool
	conn    net.Conn
	rd      *msgReader
	pid     uint32
	secret  []byte
	created time.Time
	log     *slog.Logger

	wmu sync.Mutex // guards wr
	wr  *msgWriter

	mu          sync.Mutex
	client      *client
	outstanding int  // Syncs and Queries sent whose ReadyForQuery has not come back
	unsynced    bool // extended-protocol messages sent since the last Sync
	txStatus    byte
	syncSent    uint64
	rfqSeen     uint64
	pending     []op
	prepared    map[string]struct{}
	params      map[string]string // what the server runs with now, as far as the proxy knows
	base        map[string]string // what it reported at login (the defaults DISCARD ALL returns to)
	idleSince   time.Time
	closed      bool
}

// connectServer opens and authenticates a server connection (serverlogin.go: TLS per
// server_tls_sslmode; SCRAM-SHA-256, md5 or cleartext) and starts its reader.
func (p *Proxy) connectServer(ctx context.Context, pl *pool) (*server, error) {
	params := map[string]string{"application_name": "pgvigil-proxy"}
	if pl.key.ro {
		// A read-only pool may fall back to the primary: make sure nothing writes through it.
		params["default_transaction_read_only"] = "on"
	}
	li, err := p.serverLogin(ctx, loginSpec{addr: pl.be.addr, user: pl.key.user, db: pl.key.db, params: params})
	if err != nil {
		return nil, err
	}
	s := &server{
		pool: pl, conn: li.conn, rd: li.rd, wr: newWriter(li.conn, false),
		pid: li.pid, secret: li.secret, created: time.Now(), txStatus: 'I',
		prepared: map[string]struct{}{}, params: maps.Clone(li.params), base: li.params,
		log: p.log.With("server", pl.be.addr, "pid", li.pid),
	}
	p.rememberParams(pl.key.db, li.params)
	go s.run()
	return s, nil
}

// run forwards the server's messages to the attached client until the connection ends.
func (s *server) run() {
	p := s.pool.be.p
	for {
		typ, n, err := s.rd.next()
		if err != nil {
			s.lost(err)
			return
		}
		s.mu.Lock()
		c := s.client
		if len(s.pending) > 0 && s.pending[0].internal {
			err := s.swallowInternal(typ, n)
			s.mu.Unlock()
			if err != nil {
				s.lost(err)
				return
			}
			continue
		}
		var status byte
		switch typ {
		case '1':
			if len(s.pending) > 0 {
				o := s.pending[0]
				s.pending = s.pending[1:]
				if o.swallow {
					s.mu.Unlock()
					if err := s.rd.skip(n); err != nil {
						s.lost(err)
						return
					}
					continue
				}
			}
		case 'S':
			if fits(n) {
				if f, err := s.rd.frame(n); err == nil {
					if k, v, ok := paramStatus(f[headerLen:]); ok {
						s.params[k] = v
						if c != nil {
							c.setParam(k, v)
						}
					}
				}
			}
		case 'Z':
			f, err := s.rd.frame(n)
			if err != nil || n < 1 {
				s.mu.Unlock()
				s.lost(fmt.Errorf("while reading ReadyForQuery: %w", errors.Join(err, errBadLength)))
				return
			}
			status = f[headerLen]
			s.txStatus = status
			s.rfqSeen++
			s.outstanding--
			// Parses still waiting were skipped after an error: they are not on the server.
			keep := s.pending[:0]
			for _, o := range s.pending {
				if o.seg >= s.rfqSeen {
					keep = append(keep, o)
				} else if o.name != "" {
					delete(s.prepared, o.name)
				}
			}
			s.pending = keep
		}
		s.mu.Unlock()
		if c == nil {
			// Nobody is attached: a notice, or the server saying goodbye (shutdown, admin kill).
			if typ == 'E' {
				s.log.Info("idle server connection reported an error; closing it")
				s.close()
				s.pool.remove(s)
				return
			}
			if err := s.rd.skip(n); err != nil {
				s.lost(err)
				return
			}
			continue
		}
		c.wmu.Lock()
		ferr := s.rd.forward(c.wr, n)
		if ferr == nil && (typ == 'Z' || s.rd.buffered() == 0) {
			before := c.wr.written
			ferr = c.wr.flush()
			p.met.bytesOut.Add(float64(c.wr.written - before))
		}
		c.wmu.Unlock()
		if ferr != nil {
			// Either side broke mid-answer: the server's state is unknown, so it goes too.
			_ = c.conn.Close() // best effort: the client is gone or going either way
			s.lost(ferr)
			return
		}
		if typ == 'Z' {
			if status == 'I' {
				p.met.transactions.Inc()
			}
			s.maybeRelease(c)
		}
	}
}

// swallowInternal consumes one message of an internal query's answer; called with s.mu held.
func (s *server) swallowInternal(typ byte, n int) error {
	switch typ {
	case 'S':
		b, err := s.rd.body(n)
		if err != nil {
			return err
		}
		if k, v, ok := paramStatus(b); ok {
			s.params[k] = v
			// The server reports a value it normalised ("iso, dmy" becomes "ISO, DMY"):
			// the client's wish is that value from now on, or the next attach would SET it
			// again for nothing.
			if s.client != nil {
				s.client.setParam(k, v)
			}
		}
		return nil
	case 'E':
		b, err := s.rd.body(n)
		if err != nil {
			return err
		}
		s.log.Warn("an internal query of the proxy failed", "error", errorText(b))
		s.forgetParams()
		return nil
	case 'Z':
		s.pending = s.pending[1:]
	}
	return s.rd.skip(n)
}

// maybeRelease gives the server back to its pool in transaction mode once the client's
// transaction is over and nothing it sent awaits an answer.
func (s *server) maybeRelease(c *client) {
	if c.mode != modeTransaction {
		return
	}
	s.mu.Lock()
	if s.client != c || s.outstanding > 0 || s.unsynced || s.txStatus != 'I' {
		s.mu.Unlock()
		return
	}
	s.client = nil
	s.mu.Unlock()
	s.pool.release(s)
}

// attach binds the server to c and queues the SETs that make the session look like c's.
// The caller holds s.mu; the returned query (if any) must be written before c's messages.
func (s *server) attach(c *client) []byte {
	s.client = c
	s.outstanding, s.unsynced = 0, false
	var q strings.Builder
	if len(s.prepared) > maxPreparedPerServer {
		q.WriteString("DEALLOCATE ALL;")
		clear(s.prepared)
	}
	c.pmu.Lock()
	s.syncParams(c, &q)
	c.pmu.Unlock()
	if q.Len() == 0 {
		return nil
	}
	s.pending = append(s.pending, op{internal: true})
	return queryMsg(q.String())
}

// detachReset detaches a session-mode client and queues DISCARD ALL; the caller holds s.mu.
func (s *server) detachReset() []byte {
	s.client = nil
	s.pending = append(s.pending, op{internal: true})
	clear(s.prepared)
	s.params = maps.Clone(s.base)
	return queryMsg("DISCARD ALL")
}

// queryMsg builds a simple Query frame for the proxy's own statements: DISCARD ALL, or
// DEALLOCATE ALL and set_config/RESET of the tracked settings, each at most maxSettingLen.
func queryMsg(q string) []byte {
	b := make([]byte, 0, headerLen+len(q)+1)
	b = append(b, 'Q', 0, 0, 0, 0)
	b = append(b, q...)
	b = append(b, 0)
	// #nosec G115 -- q is at most one set_config per tracked setting, each value bounded by maxSettingLen (see syncParams), plus DEALLOCATE ALL and RESETs: far below 2 GiB
	binary.BigEndian.PutUint32(b[1:], uint32(len(b)-1))
	return b
}

// send writes frames to the server and flushes.
func (s *server) send(frames ...[]byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	for _, f := range frames {
		s.wr.write(f)
	}
	return s.wr.flush()
}

// lost handles the end of the server connection: an attached client gets an error and is
// closed, since its transaction is gone with the server.
func (s *server) lost(err error) {
	s.mu.Lock()
	c := s.client
	s.client = nil
	wasClosed := s.closed
	s.mu.Unlock()
	s.close()
	s.pool.remove(s)
	if c != nil {
		if !wasClosed {
			s.log.Warn("server connection lost with a client attached", "err", err)
		}
		c.serverLost()
	}
}

func (s *server) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	_ = s.conn.Close() // best effort: the server is dropped either way and its reader ends on the closed connection
}

// cancel asks the server to cancel what this connection runs (a client's CancelRequest).
func (s *server) cancel() {
	conn, err := net.DialTimeout("tcp", s.pool.be.addr, 5*time.Second)
	if err != nil {
		s.log.Warn("cannot forward a cancel request", "err", err)
		return
	}
	defer conn.Close()
	l, err := frameLen(12 + len(s.secret))
	if err != nil || len(s.secret) > maxCancelKeyLen {
		s.log.Warn("cannot forward a cancel request: the server's cancel key is too long", "bytes", len(s.secret))
		return
	}
	b := make([]byte, 12, 12+len(s.secret))
	binary.BigEndian.PutUint32(b[0:], l)
	binary.BigEndian.PutUint32(b[4:], cancelRequestCode)
	binary.BigEndian.PutUint32(b[8:], s.pid)
	b = append(b, s.secret...)
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = conn.Write(b)
}

// paramStatus decodes a ParameterStatus body.
func paramStatus(b []byte) (string, string, bool) {
	k, rest, ok := cutZero(b)
	if !ok {
		return "", "", false
	}
	v, _, ok := cutZero(rest)
	return k, v, ok
}

func cutZero(b []byte) (string, []byte, bool) {
	for i, x := range b {
		if x == 0 {
			return string(b[:i]), b[i+1:], true
		}
	}
	return "", nil, false
}

// errorText renders an ErrorResponse body as "SEVERITY: message (SQLSTATE)".
func errorText(b []byte) string {
	var sev, msg, code string
	for len(b) > 1 {
		f := b[0]
		v, rest, ok := cutZero(b[1:])
		if !ok {
			break
		}
		switch f {
		case 'S':
			sev = v
		case 'M':
			msg = v
		case 'C':
			code = v
		}
		b = rest
	}
	return sev + ": " + msg + " (" + code + ")"
}
