package proxy

import (
	"bytes"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
)

// scramKeys log in to a server that stores the SCRAM verifier with this salt and iteration
// count, without the password: ClientKey signs the proof, ServerKey checks the server.
type scramKeys struct {
	iter                 int
	salt                 []byte
	clientKey, serverKey []byte
}

// errVerifierChanged: the server's verifier is not the one the keys were recovered from.
var errVerifierChanged = errors.New("the server's SCRAM verifier (salt or iteration count) differs from the one the client logged in to the proxy with; the password was probably changed on the server and not in auth.file, or the user has not logged in through the proxy since the change")

// scramClient runs the client side of one SCRAM-SHA-256 exchange (RFC 5802/7677) without
// channel binding, from a plain password or from recovered keys (pass-through).
type scramClient struct {
	password string
	keys     *scramKeys
	// user goes into client-first-message; PostgreSQL takes the user from the startup
	// packet and ignores it, so the proxy leaves it empty, as libpq does.
	user            string
	nonce           string
	clientFirstBare string
	serverSig       []byte
}

func newSCRAMClient(password string, keys *scramKeys) *scramClient {
	raw := make([]byte, 18)
	_, _ = rand.Read(raw)
	return &scramClient{password: password, keys: keys, nonce: base64.StdEncoding.EncodeToString(raw)}
}

// first returns client-first-message.
func (c *scramClient) first() []byte {
	c.clientFirstBare = "n=" + c.user + ",r=" + c.nonce
	return []byte("n,," + c.clientFirstBare)
}

// final takes server-first-message and returns client-final-message.
func (c *scramClient) final(serverFirst []byte) ([]byte, error) {
	var nonce, salt64, iters string
	for _, attr := range strings.Split(string(serverFirst), ",") {
		switch {
		case strings.HasPrefix(attr, "r="):
			nonce = attr[2:]
		case strings.HasPrefix(attr, "s="):
			salt64 = attr[2:]
		case strings.HasPrefix(attr, "i="):
			iters = attr[2:]
		}
	}
	if len(nonce) <= len(c.nonce) || !strings.HasPrefix(nonce, c.nonce) {
		return nil, fmt.Errorf("%w: the server's nonce does not extend the client's", errSCRAM)
	}
	salt, err := base64.StdEncoding.DecodeString(salt64)
	if err != nil || len(salt) == 0 {
		return nil, fmt.Errorf("%w: the server sent no valid salt", errSCRAM)
	}
	iter, err := strconv.Atoi(iters)
	if err != nil || iter < 1 {
		return nil, fmt.Errorf("%w: the server sent no valid iteration count", errSCRAM)
	}
	var clientKey, serverKey []byte
	switch {
	case c.password != "":
		salted, err := pbkdf2.Key(sha256.New, c.password, salt, iter, sha256.Size)
		if err != nil {
			return nil, fmt.Errorf("while deriving the SCRAM key: %w", err)
		}
		clientKey, serverKey = hmacSum(salted, []byte("Client Key")), hmacSum(salted, []byte("Server Key"))
	case c.keys != nil:
		if iter != c.keys.iter || !bytes.Equal(salt, c.keys.salt) {
			return nil, errVerifierChanged
		}
		clientKey, serverKey = c.keys.clientKey, c.keys.serverKey
	default:
		return nil, fmt.Errorf("%w: neither a password nor keys", errSCRAM)
	}
	stored := sha256.Sum256(clientKey)
	without := "c=biws,r=" + nonce // biws: base64 of the gs2 header "n,,"
	auth := []byte(c.clientFirstBare + "," + string(serverFirst) + "," + without)
	sig := hmacSum(stored[:], auth)
	proof := make([]byte, sha256.Size)
	for i := range proof {
		proof[i] = clientKey[i] ^ sig[i]
	}
	c.serverSig = hmacSum(serverKey, auth)
	return []byte(without + ",p=" + base64.StdEncoding.EncodeToString(proof)), nil
}

// verify checks server-final-message: a server that signs correctly knows the verifier.
func (c *scramClient) verify(serverFinal []byte) error {
	m := string(serverFinal)
	if e, ok := strings.CutPrefix(m, "e="); ok {
		return fmt.Errorf("%w: the server reports %q", errSCRAM, e)
	}
	v, ok := strings.CutPrefix(m, "v=")
	if i := strings.IndexByte(v, ','); i >= 0 {
		v = v[:i]
	}
	sig, err := base64.StdEncoding.DecodeString(v)
	if !ok || err != nil || c.serverSig == nil || subtle.ConstantTimeCompare(sig, c.serverSig) != 1 {
		return fmt.Errorf("%w: the server's signature is wrong (it does not hold the user's verifier)", errSCRAM)
	}
	return nil
}

// learned holds, per user, what client logins taught the proxy for logging in to servers:
// SCRAM keys recovered from the client's proof, and md5 hashes auth_query returned. Kept in
// memory only (PgBouncer does the same); the newest login wins, so after a password change
// the next client login brings the new keys.
type learned struct {
	mu    sync.Mutex
	users map[string]learnedUser
}

type learnedUser struct {
	keys  *scramKeys
	md5   string
	plain string // from an auth_query that returns plain-text passwords
}

// learn changes what the proxy holds for user.
func (l *learned) learn(user string, change func(*learnedUser)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	u := l.users[user]
	change(&u)
	l.users[user] = u
}

func (l *learned) get(user string) learnedUser {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.users[user]
}

// serverCred is what the proxy can log in to PostgreSQL with for one user.
type serverCred struct {
	plain string
	md5   string
	keys  *scramKeys
}

// serverCred gathers the user's credentials: plain text from auth.file (or
// auth.password_file for auth.user), else hashes and keys learned from client logins.
func (p *Proxy) serverCred(user string) serverCred {
	var c serverCred
	if sec := p.users[user]; sec != nil {
		c.plain, c.md5 = sec.plain, sec.md5
	}
	if user == p.cfg.Auth.User && p.authPassword != "" {
		c.plain, c.md5 = p.authPassword, md5Hash(p.authPassword, user)
	}
	if c.plain == "" {
		l := p.learned.get(user)
		c.plain, c.keys = l.plain, l.keys
		if c.md5 == "" {
			c.md5 = l.md5
		}
	}
	return c
}
