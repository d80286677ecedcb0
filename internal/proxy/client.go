package proxy

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// Codes of the untyped startup-phase packets.
const (
	sslRequestCode    = 80877103
	gssEncRequestCode = 80877104
	cancelRequestCode = 80877102
	protocolV3        = 196608
)

type poolMode int

const (
	modeSession poolMode = iota
	modeTransaction
)

func (m poolMode) String() string {
	if m == modeSession {
		return "session"
	}
	return "transaction"
}

// Client states, for metrics and SHOW CLIENTS.
const (
	stateIdle int32 = iota
	stateActive
	stateWaiting
)

// client is one client connection. Its goroutine reads the client and writes to the server it
// is attached to; the server's goroutine writes the answers back.
type client struct {
	p    *Proxy
	conn net.Conn
	rd   *msgReader
	id   uint64
	key  uint64
	addr string
	ro   bool

	wmu sync.Mutex // guards wr
	wr  *msgWriter

	user, db string
	mode     poolMode
	size     int
	since    time.Time
	state    atomic.Int32
	attached atomic.Pointer[server]
	isTLS    bool

	pmu    sync.Mutex
	params map[string]string

	// Owned by the client goroutine.
	srv     *server
	last    *server
	stmts   map[string]*stmt
	seq     uint64
	scratch []byte
	pool    *pool
	timer   *time.Timer
	handoff chan *server
	inBytes int
	// early is the client's next frame, complete in its read buffer, while it waits for a
	// server; earlySent says the releasing side has sent it (see wake).
	early     []byte
	earlySent bool
}

var errStartupDone = errors.New("startup packet handled without a session")

// serveClient runs one client connection to its end.
func (p *Proxy) serveClient(conn net.Conn, ro bool) {
	defer conn.Close()
	defer func() {
		// A bug tripped by one client's input must not take every other client down with it.
		if r := recover(); r != nil {
			p.log.Error("panic while serving a client; closing it", "client", conn.RemoteAddr().String(), "panic", r, "stack", string(debug.Stack()))
		}
	}()
	if n := p.nclients.Add(1); n > int64(p.cfg.MaxClientConn) {
		p.nclients.Add(-1)
		p.met.errors.WithLabelValues("max_client_conn").Inc()
		_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = conn.Write(errorFrame("FATAL", "53300", "sorry, too many clients already (max_client_conn "+strconv.Itoa(p.cfg.MaxClientConn)+")"))
		return
	}
	defer p.nclients.Add(-1)
	c := &client{p: p, conn: conn, id: p.nextID.Add(1), ro: ro, addr: conn.RemoteAddr().String(), since: time.Now()}
	c.rd = newClientReader(conn, maxStartupLen)
	_ = conn.SetDeadline(time.Now().Add(p.cfg.StartupTimeout.D()))
	if err := c.startup(); err != nil {
		if !errors.Is(err, errStartupDone) {
			p.log.Info("client startup failed", "client", c.addr, "err", err)
		}
		c.detach() // a session-mode login may have attached a server already
		c.rd.release()
		return
	}
	_ = c.conn.SetDeadline(time.Time{})
	c.rd.max = p.cfg.MaxMessageSize
	p.register(c)
	defer p.unregister(c)
	err := c.loop()
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		p.log.Info("client connection ended", "client", c.addr, "user", c.user, "err", err)
	}
	c.detach()
	c.rd.release()
}

// startup negotiates TLS, reads the startup message, authenticates and sends the session's
// parameters.
func (c *client) startup() error {
	p := c.p
	var sm pgproto3.StartupMessage
	for tries := 0; ; tries++ {
		if tries > 3 {
			return errors.New("too many negotiation packets")
		}
		body, err := readStartup(c.rd)
		if err != nil {
			if errors.Is(err, errBadLength) {
				c.fatal("08P01", "invalid startup packet length")
			}
			return fmt.Errorf("while reading the startup packet: %w", err)
		}
		code := binary.BigEndian.Uint32(body)
		switch code {
		case sslRequestCode:
			if p.listenerCert == nil || p.cfg.ClientTLSSSLMode == "disable" || c.isTLS {
				if _, err := c.conn.Write([]byte{'N'}); err != nil {
					return err
				}
				continue
			}
			if c.rd.buffered() > 0 {
				// Bytes sent before the handshake would be read as if protected (CVE-2021-23222).
				return errors.New("client sent data after SSLRequest before the TLS handshake")
			}
			if _, err := c.conn.Write([]byte{'S'}); err != nil {
				return err
			}
			tc := tls.Server(c.conn, &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: p.listenerCert.GetCertificate})
			if err := tc.Handshake(); err != nil {
				return fmt.Errorf("while negotiating TLS: %w", err)
			}
			c.conn, c.isTLS = tc, true
			c.rd = newClientReader(tc, maxStartupLen)
			continue
		case gssEncRequestCode:
			// GSSAPI encryption is not offered; libpq then falls back to SSL or plain text.
			if _, err := c.conn.Write([]byte{'N'}); err != nil {
				return err
			}
			continue
		case cancelRequestCode:
			if len(body) >= 12 {
				p.cancel(binary.BigEndian.Uint32(body[4:]), body[8:])
			}
			return errStartupDone
		case protocolV3:
			if err := sm.Decode(body); err != nil {
				c.fatal("08P01", "invalid startup packet layout")
				return fmt.Errorf("while decoding the startup message: %w", err)
			}
		default:
			c.fatal("0A000", fmt.Sprintf("unsupported frontend protocol %d.%d: the proxy speaks 3.0", code>>16, code&0xffff))
			return fmt.Errorf("unsupported protocol code %d", code)
		}
		break
	}
	c.wr = newWriter(c.conn, true)
	c.user, c.db = sm.Parameters["user"], sm.Parameters["database"]
	if c.user == "" {
		c.fatal("28000", "no PostgreSQL user name specified in startup packet")
		return errors.New("no user name")
	}
	if c.db == "" {
		c.db = c.user
	}
	if p.cfg.ClientTLSSSLMode == "require" && !c.isTLS {
		// As PostgreSQL answers a plain connection that only hostssl lines would admit.
		p.met.errors.WithLabelValues("auth").Inc()
		c.fatal("28000", fmt.Sprintf("no encryption: the proxy accepts user %q, database %q only over SSL (client_tls_sslmode is require)", c.user, c.db))
		return errors.New("client without SSL refused (client_tls_sslmode is require)")
	}
	if _, ok := sm.Parameters["replication"]; ok {
		c.fatal("0A000", "replication connections are not supported by the proxy; connect to the members directly")
		return errors.New("replication connection refused")
	}
	cp, perr := p.startup.clientParams(sm.Parameters)
	if perr != nil {
		c.fatal("08P01", perr.Error())
		return perr
	}
	if err := c.authenticate(); err != nil {
		p.met.errors.WithLabelValues("auth").Inc()
		return err
	}
	mode, size := p.cfg.PoolFor(c.db, c.user)
	c.mode, c.size = modeTransaction, size
	if mode == "session" {
		c.mode = modeSession
	}
	c.params = cp
	params := p.knownParams(c.db)
	if params == nil {
		s, err := c.server()
		if err != nil {
			c.loginError(err)
			return err
		}
		s.mu.Unlock()
		params = p.knownParams(c.db)
		if c.mode == modeTransaction {
			s.mu.Lock()
			s.client = nil
			s.mu.Unlock()
			c.srv = nil
			c.attached.Store(nil)
			if err := s.flushAndRelease(); err != nil {
				return err
			}
		}
	}
	var key [8]byte
	_, _ = rand.Read(key[:])
	c.key = binary.BigEndian.Uint64(key[:])
	buf := c.scratch[:0]
	buf, _ = (&pgproto3.AuthenticationOk{}).Encode(buf)
	c.pmu.Lock()
	for k, v := range params {
		if cv, ok := c.params[k]; ok {
			v = cv
		}
		buf, _ = (&pgproto3.ParameterStatus{Name: k, Value: v}).Encode(buf)
	}
	c.pmu.Unlock()
	buf, _ = (&pgproto3.BackendKeyData{ProcessID: binary.BigEndian.Uint32(key[:4]), SecretKey: key[4:]}).Encode(buf)
	buf, _ = (&pgproto3.ReadyForQuery{TxStatus: 'I'}).Encode(buf)
	c.wmu.Lock()
	c.wr.write(buf)
	err := c.wr.flush()
	c.wmu.Unlock()
	return err
}

// flushAndRelease returns a server the login borrowed only to learn the server's parameters.
func (s *server) flushAndRelease() error {
	if err := s.send(); err != nil {
		s.close()
		s.pool.remove(s)
		return err
	}
	s.pool.release(s)
	return nil
}

// readAuth reads the client's next message, which must be a password-type 'p' message.
func (c *client) readAuth() ([]byte, error) {
	typ, n, err := c.rd.next()
	if err != nil {
		if errors.Is(err, errBadLength) || errors.Is(err, errMessageTooLarge) {
			c.fatal("08P01", "invalid message length during authentication")
		}
		return nil, err
	}
	if typ != 'p' {
		c.fatal("08P01", fmt.Sprintf("expected a password message, got message type %q", typ))
		return nil, fmt.Errorf("unexpected message %q during authentication", typ)
	}
	return c.rd.body(n)
}

func (c *client) sendMsg(m pgproto3.BackendMessage) error {
	buf, err := m.Encode(c.scratch[:0])
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wr.write(buf)
	return c.wr.flush()
}

// fatal sends a FATAL ErrorResponse; the caller then closes the connection.
func (c *client) fatal(code, msg string) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wr == nil {
		c.wr = newWriter(c.conn, true)
	}
	_ = c.conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
	c.wr.write(errorFrame("FATAL", code, msg))
	_ = c.wr.flush()
}

// loginError relays why no server session could be had for the client.
func (c *client) loginError(err error) {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		c.fatal(pe.Code, pe.Message)
		return
	}
	c.fatal("08006", "cannot reach the database: "+err.Error())
}

func errorFrame(sev, code, msg string) []byte {
	b, _ := (&pgproto3.ErrorResponse{Severity: sev, SeverityUnlocalized: sev, Code: code, Message: msg}).Encode(nil)
	return b
}

// setParam follows a ParameterStatus the server sent while attached to this client.
func (c *client) setParam(k, v string) {
	c.pmu.Lock()
	c.params[k] = v
	c.pmu.Unlock()
}

// server returns the server attached to c, acquiring one if needed, with s.mu held.
func (c *client) server() (*server, error) {
	if s := c.srv; s != nil {
		s.mu.Lock()
		if s.client == c {
			return s, nil
		}
		s.mu.Unlock()
		c.srv = nil
		c.attached.Store(nil)
	}
	c.state.Store(stateWaiting)
	start := time.Now()
	s, err := c.p.acquireFor(c)
	c.early = nil
	c.p.met.queueWait.Observe(time.Since(start).Seconds())
	if err != nil {
		c.earlySent = false
		c.state.Store(stateIdle)
		return nil, err
	}
	c.state.Store(stateActive)
	if c.earlySent {
		// Attached and the frame sent by the releasing goroutine; s.mu is not held.
		c.srv, c.last = s, s
		c.attached.Store(s)
		return s, nil
	}
	s.mu.Lock()
	q := s.attach(c)
	c.srv = s
	c.attached.Store(s)
	if q != nil {
		s.wmu.Lock()
		s.wr.write(q)
		s.wmu.Unlock()
		c.last = s
	}
	return s, nil
}

// loop reads client messages and passes them to the attached server.
func (c *client) loop() error {
	for {
		if c.rd.buffered() == 0 {
			c.flushServer()
		}
		typ, n, err := c.rd.next()
		if err != nil {
			if errors.Is(err, errBadLength) || errors.Is(err, errMessageTooLarge) {
				c.p.met.errors.WithLabelValues("protocol").Inc()
				c.fatal("08P01", "invalid message: "+err.Error())
			}
			return err
		}
		var body []byte
		switch typ {
		case 'X':
			return nil
		case 'P', 'B', 'D', 'C':
			if c.mode == modeTransaction {
				if body, err = c.rd.body(n); err != nil {
					return err
				}
			}
		case 'Q', 'F', 'S', 'E', 'H', 'd', 'c', 'f':
		default:
			c.p.met.errors.WithLabelValues("protocol").Inc()
			c.fatal("08P01", fmt.Sprintf("invalid frontend message type %q", typ))
			return fmt.Errorf("protocol violation: message type %q", typ)
		}
		if typ == 'Q' && c.mode == modeTransaction && fits(n) && c.rd.buffered() >= headerLen+n {
			c.early = c.rd.buf[c.rd.r : c.rd.r+headerLen+n]
		}
		s, err := c.server()
		if err != nil {
			c.p.met.errors.WithLabelValues("query_wait_timeout").Inc()
			c.fatal("08006", "no server available: "+err.Error())
			return err
		}
		c.early = nil
		c.state.Store(stateActive)
		if c.earlySent {
			c.earlySent = false
			c.rd.consume(headerLen + n)
			c.inBytes += headerLen + n
			continue
		}
		c.inBytes += headerLen + n
		switch typ {
		case 'Q', 'F':
			s.outstanding++
			s.syncSent++
		case 'S':
			s.outstanding++
			s.syncSent++
			s.unsynced = false
		case 'P', 'B', 'D', 'C', 'E':
			s.unsynced = true
		}
		if body != nil {
			frames, perr := c.rewrite(s, typ, body)
			s.mu.Unlock()
			if perr != nil {
				c.fatal("08P01", perr.Error())
				return perr
			}
			s.wmu.Lock()
			s.wr.write(frames)
			s.wmu.Unlock()
		} else {
			s.mu.Unlock()
			s.wmu.Lock()
			err = c.rd.forward(s.wr, n)
			s.wmu.Unlock()
			if err != nil {
				return err
			}
		}
		c.last = s
	}
}

// flushServer sends what was written to the server and not flushed yet. A failed write is
// not the client's error: the server's reader notices the broken connection and tells it.
func (c *client) flushServer() {
	if c.inBytes > 0 {
		c.p.met.bytesIn.Add(float64(c.inBytes))
		c.inBytes = 0
	}
	s := c.last
	if s == nil {
		return
	}
	s.wmu.Lock()
	if s.wr.pending() {
		_ = s.wr.flush()
	}
	s.wmu.Unlock()
}

// detach ends the client's hold on its server: in session mode an idle server is reset with
// DISCARD ALL and pooled again; a server left mid-transaction or mid-answer is closed.
func (c *client) detach() {
	s := c.srv
	c.srv = nil
	c.attached.Store(nil)
	if s == nil {
		return
	}
	s.mu.Lock()
	if s.client != c {
		s.mu.Unlock()
		return
	}
	if s.outstanding == 0 && !s.unsynced && s.txStatus == 'I' && !s.closed {
		var q []byte
		if c.mode == modeSession {
			q = s.detachReset()
		} else {
			s.client = nil
		}
		s.mu.Unlock()
		s.wmu.Lock()
		if q != nil {
			s.wr.write(q)
		}
		err := s.wr.flush()
		s.wmu.Unlock()
		if err == nil {
			s.pool.release(s)
			return
		}
		s.close()
		return
	}
	s.client = nil
	s.mu.Unlock()
	s.close()
}

// serverLost tells the client its server went away and closes it.
func (c *client) serverLost() {
	c.p.met.errors.WithLabelValues("server_lost").Inc()
	c.fatal("08006", "server connection lost (the database server closed it, restarted or is no longer the primary)")
	_ = c.conn.Close() // the client is being dropped; a failed close leaves nothing to do
}
