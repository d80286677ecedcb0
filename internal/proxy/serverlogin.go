package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// Bounds of one server login: the TCP connect, and everything up to ReadyForQuery.
const (
	serverDialTimeout  = 5 * time.Second
	serverLoginTimeout = 10 * time.Second
	// maxLoginMessage bounds what a server may send before ReadyForQuery (errors, notices,
	// parameters); larger messages only come later, as query results.
	maxLoginMessage = 1 << 20
)

// loginSpec is one server connection to open.
type loginSpec struct {
	addr     string
	user, db string
	params   map[string]string // startup parameters besides user and database
}

// loggedIn is a server connection that has reached ReadyForQuery. rd may hold bytes the
// server sent after it; it must be the connection's reader from then on.
type loggedIn struct {
	conn   net.Conn
	rd     *msgReader
	pid    uint32
	secret []byte
	params map[string]string
}

// How one login attempt treats TLS.
type tlsUse int

const (
	tlsNever     tlsUse = iota
	tlsIfOffered        // ask; go on in plain text when the server says no
	tlsRequired
)

// serverLogin opens and authenticates a connection to PostgreSQL, with TLS as libpq's
// sslmode says (server_tls_sslmode): allow tries plain text first and TLS if the server
// rejects the login; prefer tries TLS first and plain text if the handshake fails or the
// server rejects the login over TLS; require, verify-ca and verify-full insist on TLS.
func (p *Proxy) serverLogin(ctx context.Context, spec loginSpec) (*loggedIn, error) {
	ctx, cancel := context.WithTimeout(ctx, serverLoginTimeout)
	defer cancel()
	cred := p.serverCred(spec.user)
	mode := p.cfg.ServerTLSSSLMode
	var li *loggedIn
	var retry bool
	var err error
	switch mode {
	case "disable":
		li, _, err = p.loginOnce(ctx, spec, cred, tlsNever)
	case "allow":
		if li, retry, err = p.loginOnce(ctx, spec, cred, tlsNever); retry {
			li, _, err = p.loginOnce(ctx, spec, cred, tlsRequired)
		}
	case "prefer":
		if li, retry, err = p.loginOnce(ctx, spec, cred, tlsIfOffered); retry {
			li, _, err = p.loginOnce(ctx, spec, cred, tlsNever)
		}
	default:
		li, _, err = p.loginOnce(ctx, spec, cred, tlsRequired)
	}
	if err != nil {
		return nil, fmt.Errorf("server login for user %q at %s: %w", spec.user, spec.addr, err)
	}
	return li, nil
}

// loginOnce is one login attempt on a new connection. retry reports a failure libpq answers
// with another attempt over the other transport (see serverLogin).
func (p *Proxy) loginOnce(ctx context.Context, spec loginSpec, cred serverCred, use tlsUse) (li *loggedIn, retry bool, err error) {
	d := net.Dialer{Timeout: serverDialTimeout}
	conn, err := d.DialContext(ctx, "tcp", spec.addr)
	if err != nil {
		return nil, false, fmt.Errorf("while connecting: %w", err)
	}
	conn = newRawTCP(conn)
	defer func() {
		if err != nil {
			_ = conn.Close() // the attempt failed; its error is the one to report
		}
	}()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	usedTLS := false
	if use != tlsNever {
		tc, err := p.startTLS(ctx, conn, spec.addr, use)
		if err != nil {
			// prefer falls back to plain text when the handshake fails.
			return nil, use == tlsIfOffered && errors.Is(err, errHandshake), err
		}
		if tc != nil {
			conn, usedTLS = tc, true
		}
	}
	li, authOK, err := p.serverStartup(conn, spec, cred)
	if err != nil {
		var pe *pgconn.PgError
		var ce *credentialError
		rejected := errors.As(err, &pe) && !errors.As(err, &ce) && !authOK
		mode := p.cfg.ServerTLSSSLMode
		return nil, rejected && ((mode == "allow" && !usedTLS) || (mode == "prefer" && usedTLS)), err
	}
	_ = conn.SetDeadline(time.Time{})
	return li, false, nil
}

var errHandshake = errors.New("TLS handshake failed")

// startTLS sends SSLRequest and, when the server agrees, runs the handshake. It returns nil
// (no error) when the server declines and use allows plain text.
func (p *Proxy) startTLS(ctx context.Context, conn net.Conn, addr string, use tlsUse) (*tls.Conn, error) {
	var req [8]byte
	binary.BigEndian.PutUint32(req[0:], 8)
	binary.BigEndian.PutUint32(req[4:], sslRequestCode)
	if _, err := conn.Write(req[:]); err != nil {
		return nil, fmt.Errorf("while sending SSLRequest: %w", err)
	}
	// One byte, read straight from the socket: anything the server sent after it would be
	// read as if it had come through TLS (CVE-2021-23222), so nothing is buffered here.
	answer := make([]byte, 1)
	if _, err := io.ReadFull(conn, answer); err != nil {
		return nil, fmt.Errorf("while reading the answer to SSLRequest: %w", err)
	}
	switch b := answer[0]; b {
	case 'S':
	case 'N':
		switch {
		case use == tlsRequired && p.cfg.ServerTLSSSLMode == "allow":
			return nil, errors.New("the server refused the login without TLS and does not support SSL")
		case use == tlsRequired:
			return nil, fmt.Errorf("the server does not support SSL, but server_tls_sslmode %s requires it", p.cfg.ServerTLSSSLMode)
		}
		return nil, nil
	default:
		return nil, fmt.Errorf("invalid answer %q to SSLRequest", b)
	}
	host, _, _ := net.SplitHostPort(addr)
	tc := tls.Client(conn, p.serverTLSConfig(host))
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("%w: %w", errHandshake, err)
	}
	return tc, nil
}

// serverTLSConfig follows libpq's sslmode: require encrypts without checking the server
// (unless server_tls_ca_file is set: then, as in libpq, it behaves as verify-ca); verify-ca
// checks the chain against server_tls_ca_file (the system's CAs when unset); verify-full
// also checks that the certificate names the host dialled.
func (p *Proxy) serverTLSConfig(host string) *tls.Config {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host, RootCAs: p.serverCAs}
	mode := p.cfg.ServerTLSSSLMode
	if mode == "require" && p.serverCAs != nil {
		mode = "verify-ca"
	}
	switch mode {
	case "verify-full":
	case "verify-ca":
		tc.InsecureSkipVerify = true // #nosec G402 -- verify-ca: the chain is checked below, the host name deliberately not (libpq semantics)
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the server sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: p.serverCAs, Intermediates: inter})
			return err
		}
	default:
		tc.InsecureSkipVerify = true // #nosec G402 -- allow, prefer and require (without a CA file) encrypt without authenticating the server, as libpq does; verify-ca/verify-full check it
	}
	return tc
}

// loadServerCAs reads server_tls_ca_file.
func loadServerCAs(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path) // #nosec G304 -- the CA file the operator named in server_tls_ca_file
	if err != nil {
		return nil, fmt.Errorf("server_tls_ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("server_tls_ca_file: %s holds no PEM certificate", path)
	}
	return pool, nil
}

// credentialError is a login the proxy gives up on itself: it holds no usable password for
// the server's method. It carries a PgError with SQLSTATE 28000
// (invalid_authorization_specification), so a waiting client fails at once and is told
// why; libpq's allow/prefer retry does not apply to it.
type credentialError struct{ pg *pgconn.PgError }

func (e *credentialError) Error() string { return e.pg.Message }
func (e *credentialError) Unwrap() error { return e.pg }

func noCredential(user, why string) error {
	return &credentialError{pg: &pgconn.PgError{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: "28000",
		Message: fmt.Sprintf("the proxy cannot log in to PostgreSQL as %q: %s", user, why)}}
}

// serverStartup sends the StartupMessage, answers the server's authentication request and reads
// up to ReadyForQuery. authOK reports whether authentication had succeeded when err came.
func (p *Proxy) serverStartup(conn net.Conn, spec loginSpec, cred serverCred) (li *loggedIn, authOK bool, err error) {
	params := map[string]string{"user": spec.user, "database": spec.db}
	for k, v := range spec.params {
		params[k] = v
	}
	buf, err := (&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: params}).Encode(nil)
	if err != nil {
		return nil, false, fmt.Errorf("while encoding the startup message: %w", err)
	}
	if _, err := conn.Write(buf); err != nil {
		return nil, false, fmt.Errorf("while sending the startup message: %w", err)
	}
	rd := newServerReader(conn)
	rd.max = maxLoginMessage
	li = &loggedIn{conn: conn, rd: rd, params: map[string]string{}}
	var sc *scramClient
	send := func(m pgproto3.FrontendMessage) error {
		b, err := m.Encode(nil)
		if err == nil {
			_, err = conn.Write(b)
		}
		return err
	}
	for {
		typ, n, err := rd.next()
		if err != nil {
			return nil, authOK, fmt.Errorf("while reading the server's answer: %w", err)
		}
		body, err := rd.body(n)
		if err != nil {
			return nil, authOK, fmt.Errorf("while reading the server's answer: %w", err)
		}
		switch typ {
		case 'R':
			done, err := p.answerAuth(body, spec.user, cred, &sc, send)
			if err != nil {
				return nil, false, err
			}
			authOK = authOK || done
		case 'E':
			var e pgproto3.ErrorResponse
			if err := e.Decode(body); err != nil {
				return nil, authOK, fmt.Errorf("while decoding the server's error: %w", err)
			}
			return nil, authOK, pgconn.ErrorResponseToPgError(&e)
		case 'S':
			if k, v, ok := paramStatus(body); ok {
				li.params[k] = v
			}
		case 'K':
			if len(body) < 8 || len(body) > 4+maxCancelKeyLen {
				return nil, authOK, fmt.Errorf("malformed BackendKeyData (%d bytes)", len(body))
			}
			li.pid, li.secret = binary.BigEndian.Uint32(body), append([]byte(nil), body[4:]...)
		case 'Z':
			if !authOK {
				return nil, false, errors.New("the server sent ReadyForQuery before authentication completed")
			}
			rd.max = 1 << 30
			return li, true, nil
		case 'N', 'v':
			// A notice, or NegotiateProtocolVersion (the proxy asks for no protocol options).
		default:
			return nil, authOK, fmt.Errorf("unexpected message %q during login", typ)
		}
	}
}

// answerAuth handles one AuthenticationRequest; done reports AuthenticationOk.
func (p *Proxy) answerAuth(body []byte, user string, cred serverCred, sc **scramClient, send func(pgproto3.FrontendMessage) error) (done bool, err error) {
	if len(body) < 4 {
		return false, errors.New("malformed authentication request")
	}
	switch code := binary.BigEndian.Uint32(body); code {
	case pgproto3.AuthTypeOk:
		if *sc != nil && (*sc).serverSig != nil {
			return false, fmt.Errorf("%w: the server ended the exchange without its signature", errSCRAM)
		}
		return true, nil
	case pgproto3.AuthTypeCleartextPassword:
		if cred.plain == "" {
			return false, noCredential(user, "the server asks for the password in plain text, and the proxy knows the password only as a hash (give it in plain text in auth.file)")
		}
		return false, send(&pgproto3.PasswordMessage{Password: cred.plain})
	case pgproto3.AuthTypeMD5Password:
		var m pgproto3.AuthenticationMD5Password
		if err := m.Decode(body); err != nil {
			return false, fmt.Errorf("malformed md5 request: %w", err)
		}
		hash := cred.md5
		if hash == "" && cred.plain != "" {
			hash = md5Hash(cred.plain, user)
		}
		if hash == "" {
			return false, noCredential(user, "the server asks for md5 authentication, and the proxy has neither the password nor its md5 hash (only a SCRAM verifier)")
		}
		return false, send(&pgproto3.PasswordMessage{Password: md5Answer(hash, m.Salt)})
	case pgproto3.AuthTypeSASL:
		var m pgproto3.AuthenticationSASL
		if err := m.Decode(body); err != nil {
			return false, fmt.Errorf("malformed SASL request: %w", err)
		}
		offered := false
		for _, mech := range m.AuthMechanisms {
			offered = offered || mech == "SCRAM-SHA-256"
		}
		if !offered {
			return false, fmt.Errorf("the server offers SASL mechanisms %v; the proxy speaks SCRAM-SHA-256", m.AuthMechanisms)
		}
		if cred.plain == "" && cred.keys == nil {
			return false, noCredential(user, "the server asks for SCRAM-SHA-256, and the proxy holds only a hash of the password: give it in plain text in auth.file, or let the user log in to the proxy with SCRAM first (the proxy then keeps the keys the login proves)")
		}
		*sc = newSCRAMClient(cred.plain, cred.keys)
		return false, send(&pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: (*sc).first()})
	case pgproto3.AuthTypeSASLContinue:
		if *sc == nil {
			return false, errors.New("SASLContinue without a SASL exchange")
		}
		msg, err := (*sc).final(body[4:])
		if errors.Is(err, errVerifierChanged) {
			return false, noCredential(user, err.Error())
		}
		if err != nil {
			return false, err
		}
		return false, send(&pgproto3.SASLResponse{Data: msg})
	case pgproto3.AuthTypeSASLFinal:
		if *sc == nil {
			return false, errors.New("SASLFinal without a SASL exchange")
		}
		if err := (*sc).verify(body[4:]); err != nil {
			return false, err
		}
		(*sc).serverSig = nil
		return false, nil
	default:
		return false, fmt.Errorf("the server asks for authentication method %d (GSSAPI, SSPI or Kerberos), which the proxy does not support", code)
	}
}
