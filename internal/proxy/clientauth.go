package proxy

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"
)

// authState is what the proxy keeps for authentication beyond the auth file.
type authState struct {
	// authPassword is auth.user's password from auth.password_file.
	authPassword string
	// aq runs auth_query; nil when auth.user is not set.
	aq *authQuerier
	// learned holds keys and hashes from client logins, for server logins.
	learned learned
	// serverCAs is server_tls_ca_file; nil: the system's CAs.
	serverCAs *x509.CertPool
	// startup classifies clients' startup parameters.
	startup *startupRules
}

// initAuth reads auth.password_file and server_tls_ca_file and sets up auth_query and the
// startup parameter rules.
func (p *Proxy) initAuth() error {
	a := &p.authState
	a.learned.users = map[string]learnedUser{}
	a.startup = newStartupRules(p.cfg.TrackExtraParameters, p.cfg.IgnoreStartupParameters)
	if f := p.cfg.ServerTLSCAFile; f != "" {
		pool, err := loadServerCAs(f)
		if err != nil {
			return err
		}
		a.serverCAs = pool
	}
	if p.cfg.Auth.User == "" {
		return nil
	}
	if f := p.cfg.Auth.PasswordFile; f != "" {
		b, err := os.ReadFile(f) // #nosec G304 -- the password file the operator named in auth.password_file
		if err != nil {
			return fmt.Errorf("auth.password_file: %w", err)
		}
		// The content is the password, without one trailing line break (editors add one).
		pw := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		if pw == "" {
			return fmt.Errorf("auth.password_file: %s is empty", f)
		}
		a.authPassword = pw
	}
	if sec := p.users[p.cfg.Auth.User]; a.authPassword == "" {
		switch {
		case sec == nil:
			return fmt.Errorf("auth.user: %q has no password: give it in auth.password_file or in auth.file", p.cfg.Auth.User)
		case sec.plain == "":
			p.log.Warn("auth.user has only a hash in auth.file: auth_query works once it has logged in to the proxy itself with SCRAM (or if the server accepts md5 with an md5 hash); a plain-text password in auth.password_file always works",
				"user", p.cfg.Auth.User)
		}
	}
	a.aq = newAuthQuerier(p)
	return nil
}

// secretFor returns what the client's password is checked against: the auth file's entry,
// else auth_query's answer (fromQuery). nil: no such user, or no password.
func (p *Proxy) secretFor(user, db string) (sec *secret, fromQuery bool, err error) {
	if sec := p.users[user]; sec != nil || p.aq == nil {
		return sec, false, nil
	}
	ctx := p.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.StartupTimeout.D())
	defer cancel()
	sec, err = p.aq.lookup(ctx, user, db)
	return sec, true, err
}

// authenticate runs the configured method against the auth file or auth_query. md5 is used
// when the user's secret has an md5 hash; otherwise SCRAM-SHA-256, also under auth.type md5
// (as PostgreSQL does for SCRAM verifiers with an md5 pg_hba line). Unknown users go
// through a SCRAM exchange with a made-up verifier and fail at its end, as PostgreSQL does
// with password_encryption scram-sha-256, which pgvigil sets.
func (c *client) authenticate() error {
	p := c.p
	if p.cfg.Auth.Type == AuthTrust {
		return nil
	}
	sec, fromQuery, err := p.secretFor(c.user, c.db)
	if err != nil {
		c.authQueryFailed(err)
		return err
	}
	fail := func() error {
		c.fatal("28P01", fmt.Sprintf("password authentication failed for user %q", c.user))
		return fmt.Errorf("%w for user %q", errBadPassword, c.user)
	}
	if p.cfg.Auth.Type == AuthMD5 && sec != nil && sec.md5 != "" {
		var salt [4]byte
		_, _ = rand.Read(salt[:])
		if err := c.sendMsg(&pgproto3.AuthenticationMD5Password{Salt: salt}); err != nil {
			return err
		}
		b, err := c.readAuth()
		if err != nil {
			return err
		}
		var pm pgproto3.PasswordMessage
		if err := pm.Decode(b); err != nil || !checkMD5(sec, salt, pm.Password) {
			return fail()
		}
		p.learnFromQuery(c.user, sec, fromQuery)
		return nil
	}
	ss := &scramServer{}
	if sec == nil || sec.scram == nil {
		// Unknown user, no password, or an md5-only entry under scram-sha-256: run the
		// exchange with a made-up secret and fail at the end, so a client cannot tell which
		// users exist.
		salt := make([]byte, 16)
		_, _ = rand.Read(salt)
		ss.sec, ss.fake = &scramSecret{iter: scramIterations, salt: salt, storedKey: make([]byte, 32), serverKey: make([]byte, 32)}, true
	} else {
		ss.sec = sec.scram
	}
	if err := c.sendMsg(&pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256"}}); err != nil {
		return err
	}
	b, err := c.readAuth()
	if err != nil {
		return err
	}
	var init pgproto3.SASLInitialResponse
	if err := init.Decode(b); err != nil || init.AuthMechanism != "SCRAM-SHA-256" {
		c.fatal("28000", "expected a SASLInitialResponse for SCRAM-SHA-256")
		return errors.New("bad SASLInitialResponse")
	}
	first, err := ss.first(init.Data)
	if err != nil {
		c.fatal("08P01", err.Error())
		return err
	}
	if err := c.sendMsg(&pgproto3.AuthenticationSASLContinue{Data: []byte(first)}); err != nil {
		return err
	}
	if b, err = c.readAuth(); err != nil {
		return err
	}
	var resp pgproto3.SASLResponse
	if err := resp.Decode(b); err != nil {
		c.fatal("08P01", "malformed SASLResponse")
		return err
	}
	final, err := ss.final(resp.Data)
	if errors.Is(err, errBadPassword) {
		return fail()
	}
	if err != nil {
		c.fatal("08P01", err.Error())
		return err
	}
	if sec.plain == "" {
		// Pass-through: the proof gave the ClientKey of the stored verifier, which answers
		// the server's SCRAM exchange for this user from now on.
		p.learned.learn(c.user, func(u *learnedUser) {
			u.keys = &scramKeys{iter: sec.scram.iter, salt: sec.scram.salt, clientKey: ss.clientKey, serverKey: sec.scram.serverKey}
		})
	}
	p.learnFromQuery(c.user, sec, fromQuery)
	return c.sendMsg(&pgproto3.AuthenticationSASLFinal{Data: []byte(final)})
}

// learnFromQuery keeps, after a successful login, what an auth_query answer lets the proxy
// log in to servers with: a plain-text password (from a custom query) or an md5 hash. SCRAM
// verifiers are covered by the keys the login proved.
func (p *Proxy) learnFromQuery(user string, sec *secret, fromQuery bool) {
	switch {
	case !fromQuery:
	case sec.plain != "":
		p.learned.learn(user, func(u *learnedUser) { u.plain = sec.plain })
	case sec.md5 != "":
		p.learned.learn(user, func(u *learnedUser) { u.md5 = sec.md5 })
	}
}
