package proxy

import (
	"bufio"
	"crypto/hmac"
	"crypto/md5" // #nosec G501 -- PostgreSQL's md5 password authentication is defined on MD5; SCRAM-SHA-256 is the default
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// Authentication methods for clients.
const (
	AuthSCRAM = "scram-sha-256"
	AuthMD5   = "md5"
	AuthTrust = "trust"
)

// scramIterations matches PostgreSQL's default scram_iterations.
const scramIterations = 4096

// secret is what the proxy knows about one user's password.
type secret struct {
	plain string // empty when the file holds only a hash
	md5   string // "md5" + hex(md5(password + user)), empty when unknown
	scram *scramSecret
}

type scramSecret struct {
	iter                 int
	salt                 []byte
	storedKey, serverKey []byte
}

// Userlist maps user names to secrets, read from a PgBouncer-style auth file:
// one `"user" "password"` pair a line, where the password is plain text, md5<hex> or a
// SCRAM-SHA-256$… verifier as PostgreSQL stores it. Lines starting with ; or # are comments.
type Userlist map[string]*secret

// Passwords are the plain-text passwords of the auth file, for redaction.
func (u Userlist) Passwords() []string {
	var out []string
	for _, s := range u {
		if s.plain != "" {
			out = append(out, s.plain)
		}
	}
	return out
}

// LoadUserlist reads and parses an auth file.
func LoadUserlist(path string) (Userlist, error) {
	f, err := os.Open(path) // #nosec G304 -- the auth file the operator named in auth.file
	if err != nil {
		return nil, fmt.Errorf("while reading the auth file: %w", err)
	}
	defer f.Close()
	return ParseUserlist(f, path)
}

// ParseUserlist parses the auth file format; name is used in error messages.
func ParseUserlist(r io.Reader, name string) (Userlist, error) {
	out := Userlist{}
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || text[0] == ';' || text[0] == '#' {
			continue
		}
		fields, err := quotedFields(text)
		if err != nil || len(fields) < 2 {
			if err == nil {
				err = errors.New(`want "user" "password"`)
			}
			return nil, fmt.Errorf("%s:%d: %w", name, line, err)
		}
		s, err := newSecret(fields[0], fields[1])
		if err != nil {
			return nil, fmt.Errorf("%s:%d: user %q: %w", name, line, fields[0], err)
		}
		out[fields[0]] = s
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("while reading %s: %w", name, err)
	}
	return out, nil
}

// quotedFields splits `"a" "b"` where a doubled quote inside a field stands for one quote.
func quotedFields(s string) ([]string, error) {
	var out []string
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			return out, nil
		}
		if s[0] != '"' {
			return nil, fmt.Errorf("field %d is not quoted", len(out)+1)
		}
		var b strings.Builder
		i := 1
		for ; i < len(s); i++ {
			if s[i] == '"' {
				if i+1 < len(s) && s[i+1] == '"' {
					b.WriteByte('"')
					i++
					continue
				}
				break
			}
			b.WriteByte(s[i])
		}
		if i >= len(s) {
			return nil, fmt.Errorf("field %d has no closing quote", len(out)+1)
		}
		out = append(out, b.String())
		s = s[i+1:]
	}
}

func newSecret(user, pw string) (*secret, error) {
	switch {
	case strings.HasPrefix(pw, "SCRAM-SHA-256$"):
		sc, err := parseSCRAMSecret(pw)
		if err != nil {
			return nil, err
		}
		return &secret{scram: sc}, nil
	case len(pw) == 35 && strings.HasPrefix(pw, "md5"):
		if _, err := hex.DecodeString(pw[3:]); err != nil {
			return nil, errors.New("md5 hash is not hexadecimal")
		}
		return &secret{md5: pw}, nil
	}
	salt := make([]byte, 16)
	_, _ = rand.Read(salt)
	sc, err := deriveSCRAM(pw, salt, scramIterations)
	if err != nil {
		return nil, err
	}
	return &secret{plain: pw, md5: md5Hash(pw, user), scram: sc}, nil
}

func md5Hash(pw, user string) string {
	sum := md5.Sum([]byte(pw + user)) // #nosec G401 -- PostgreSQL's md5 password format, md5(password || user), needed only for auth.type md5; SCRAM-SHA-256 is the default
	return "md5" + hex.EncodeToString(sum[:])
}

func deriveSCRAM(pw string, salt []byte, iter int) (*scramSecret, error) {
	salted, err := pbkdf2.Key(sha256.New, pw, salt, iter, sha256.Size)
	if err != nil {
		return nil, fmt.Errorf("while deriving the SCRAM key: %w", err)
	}
	ck := hmacSum(salted, []byte("Client Key"))
	sk := sha256.Sum256(ck)
	return &scramSecret{iter: iter, salt: salt, storedKey: sk[:], serverKey: hmacSum(salted, []byte("Server Key"))}, nil
}

// parseSCRAMSecret reads SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>.
func parseSCRAMSecret(s string) (*scramSecret, error) {
	parts := strings.Split(strings.TrimPrefix(s, "SCRAM-SHA-256$"), "$")
	if len(parts) != 2 {
		return nil, errors.New("SCRAM verifier: want SCRAM-SHA-256$iterations:salt$StoredKey:ServerKey")
	}
	is, ss, ok := strings.Cut(parts[0], ":")
	ks, vs, ok2 := strings.Cut(parts[1], ":")
	if !ok || !ok2 {
		return nil, errors.New("SCRAM verifier: missing ':'")
	}
	iter, err := strconv.Atoi(is)
	if err != nil || iter < 1 {
		return nil, fmt.Errorf("SCRAM verifier: bad iteration count %q", is)
	}
	salt, err1 := base64.StdEncoding.DecodeString(ss)
	stored, err2 := base64.StdEncoding.DecodeString(ks)
	server, err3 := base64.StdEncoding.DecodeString(vs)
	if err := errors.Join(err1, err2, err3); err != nil || len(stored) != sha256.Size || len(server) != sha256.Size {
		return nil, errors.New("SCRAM verifier: salt or keys are not valid base64 of the right size")
	}
	return &scramSecret{iter: iter, salt: salt, storedKey: stored, serverKey: server}, nil
}

func hmacSum(key, msg []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write(msg)
	return h.Sum(nil)
}

// scramServer runs the server side of one SCRAM-SHA-256 exchange (RFC 5802/7677, without
// channel binding: the proxy does not offer SCRAM-SHA-256-PLUS).
type scramServer struct {
	sec             *scramSecret
	fake            bool // unknown user: go through the motions, then fail, as PostgreSQL does
	clientFirstBare string
	serverFirst     string
	nonce           string
	// clientKey is recovered from a successful exchange (ClientProof XOR ClientSignature):
	// with it the proxy can answer a server's SCRAM exchange against the same verifier.
	clientKey []byte
}

var errSCRAM = errors.New("SCRAM exchange failed")

// first takes client-first-message and returns server-first-message.
func (s *scramServer) first(msg []byte) (string, error) {
	m := string(msg)
	// gs2 header: "n,," or "y,," (client supports binding, server does not offer it).
	if !strings.HasPrefix(m, "n,") && !strings.HasPrefix(m, "y,") {
		return "", fmt.Errorf("%w: unsupported channel binding flag", errSCRAM)
	}
	rest := m[2:]
	i := strings.IndexByte(rest, ',')
	if i < 0 {
		return "", fmt.Errorf("%w: malformed gs2 header", errSCRAM)
	}
	s.clientFirstBare = rest[i+1:]
	var cnonce string
	for _, attr := range strings.Split(s.clientFirstBare, ",") {
		if strings.HasPrefix(attr, "r=") {
			cnonce = attr[2:]
		}
	}
	if cnonce == "" {
		return "", fmt.Errorf("%w: client nonce missing", errSCRAM)
	}
	raw := make([]byte, 18)
	_, _ = rand.Read(raw)
	s.nonce = cnonce + base64.StdEncoding.EncodeToString(raw)
	s.serverFirst = fmt.Sprintf("r=%s,s=%s,i=%d", s.nonce, base64.StdEncoding.EncodeToString(s.sec.salt), s.sec.iter)
	return s.serverFirst, nil
}

// final checks client-final-message and returns server-final-message.
func (s *scramServer) final(msg []byte) (string, error) {
	m := string(msg)
	i := strings.LastIndex(m, ",p=")
	if i < 0 {
		return "", fmt.Errorf("%w: proof missing", errSCRAM)
	}
	without := m[:i]
	proof, err := base64.StdEncoding.DecodeString(m[i+3:])
	if err != nil || len(proof) != sha256.Size {
		return "", fmt.Errorf("%w: malformed proof", errSCRAM)
	}
	var nonce string
	for _, attr := range strings.Split(without, ",") {
		if strings.HasPrefix(attr, "r=") {
			nonce = attr[2:]
		}
	}
	if nonce != s.nonce {
		return "", fmt.Errorf("%w: nonce mismatch", errSCRAM)
	}
	auth := []byte(s.clientFirstBare + "," + s.serverFirst + "," + without)
	sig := hmacSum(s.sec.storedKey, auth)
	ck := make([]byte, sha256.Size)
	for k := range ck {
		ck[k] = proof[k] ^ sig[k]
	}
	got := sha256.Sum256(ck)
	if s.fake || subtle.ConstantTimeCompare(got[:], s.sec.storedKey) != 1 {
		return "", errBadPassword
	}
	s.clientKey = ck
	return "v=" + base64.StdEncoding.EncodeToString(hmacSum(s.sec.serverKey, auth)), nil
}

var errBadPassword = errors.New("password authentication failed")

// checkMD5 verifies a PasswordMessage answer to an md5 challenge.
func checkMD5(sec *secret, salt [4]byte, answer string) bool {
	if sec == nil || sec.md5 == "" {
		return false
	}
	want := md5Answer(sec.md5, salt)
	return subtle.ConstantTimeCompare([]byte(want), []byte(answer)) == 1
}

// md5Answer is the reply to an md5 challenge from the stored hash ("md5" + hex), as a client
// computes it: "md5" + hex(md5(hex part + salt)).
func md5Answer(hash string, salt [4]byte) string {
	sum := md5.Sum(append([]byte(hash[3:]), salt[:]...)) // #nosec G401 -- the answer the wire protocol's md5 challenge requires; SCRAM-SHA-256 is the default
	return "md5" + hex.EncodeToString(sum[:])
}
