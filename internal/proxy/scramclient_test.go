package proxy

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

// RFC 7677 section 3: the SCRAM-SHA-256 exchange of user "user" with password "pencil".
const (
	rfcNonce       = "rOprNGfwEbeRWgbNEkqO"
	rfcServerFirst = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
	rfcClientFinal = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
	rfcServerFinal = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
)

func rfcClient(password string, keys *scramKeys) *scramClient {
	c := newSCRAMClient(password, keys)
	c.user, c.nonce = "user", rfcNonce
	return c
}

func rfcSalt(t *testing.T) []byte {
	t.Helper()
	salt, err := base64.StdEncoding.DecodeString("W22ZaJ0SNY7soEsUEjb6gQ==")
	if err != nil {
		t.Fatal(err)
	}
	return salt
}

func TestSCRAMClientRFC7677(t *testing.T) {
	c := rfcClient("pencil", nil)
	if got := string(c.first()); got != "n,,n=user,r="+rfcNonce {
		t.Fatalf("client-first = %q", got)
	}
	final, err := c.final([]byte(rfcServerFirst))
	if err != nil {
		t.Fatal(err)
	}
	if string(final) != rfcClientFinal {
		t.Fatalf("client-final = %q, want %q", final, rfcClientFinal)
	}
	if err := c.verify([]byte(rfcServerFinal)); err != nil {
		t.Fatalf("the RFC's server signature refused: %v", err)
	}
	if err := c.verify([]byte("v=" + base64.StdEncoding.EncodeToString(make([]byte, 32)))); err == nil {
		t.Fatal("a wrong server signature was accepted")
	}
	if err := c.verify([]byte("e=invalid-proof")); err == nil || !strings.Contains(err.Error(), "invalid-proof") {
		t.Fatalf("server error: %v", err)
	}
}

// TestSCRAMPassThrough: a client logs in to the proxy against the stored verifier; the
// ClientKey recovered from its proof answers the server's exchange exactly as the password
// would (the RFC vector again, now without the password).
func TestSCRAMPassThrough(t *testing.T) {
	sec, err := deriveSCRAM("pencil", rfcSalt(t), 4096)
	if err != nil {
		t.Fatal(err)
	}
	// Client → proxy: the proxy knows only the verifier.
	ss := &scramServer{sec: sec}
	bare := "n=,r=clientnonce"
	first, err := ss.first([]byte("n,," + bare))
	if err != nil {
		t.Fatal(err)
	}
	final, _ := clientFinal(t, "pencil", bare, first)
	if _, err := ss.final([]byte(final)); err != nil {
		t.Fatal(err)
	}
	if got := sha256.Sum256(ss.clientKey); string(got[:]) != string(sec.storedKey) {
		t.Fatal("the recovered ClientKey does not hash to StoredKey")
	}
	// Proxy → server, with the recovered keys.
	keys := &scramKeys{iter: sec.iter, salt: sec.salt, clientKey: ss.clientKey, serverKey: sec.serverKey}
	c := rfcClient("", keys)
	c.first()
	got, err := c.final([]byte(rfcServerFirst))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != rfcClientFinal {
		t.Fatalf("pass-through client-final = %q, want %q", got, rfcClientFinal)
	}
	if err := c.verify([]byte(rfcServerFinal)); err != nil {
		t.Fatal(err)
	}

	// A wrong password proves nothing and yields no key.
	ss = &scramServer{sec: sec}
	first, _ = ss.first([]byte("n,," + bare))
	final, _ = clientFinal(t, "pen", bare, first)
	if _, err := ss.final([]byte(final)); !errors.Is(err, errBadPassword) || ss.clientKey != nil {
		t.Fatalf("wrong password: %v, key %x", err, ss.clientKey)
	}

	// The server's verifier changed (new salt or iterations): the keys do not apply.
	for _, sf := range []string{
		"r=" + rfcNonce + "xyz,s=" + base64.StdEncoding.EncodeToString([]byte("othersalt")) + ",i=4096",
		"r=" + rfcNonce + "xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=8192",
	} {
		c := rfcClient("", keys)
		c.first()
		if _, err := c.final([]byte(sf)); !errors.Is(err, errVerifierChanged) {
			t.Errorf("%s: %v, want errVerifierChanged", sf, err)
		}
	}
}

func TestSCRAMClientRefusesBadServerFirst(t *testing.T) {
	for _, sf := range []string{
		"r=othernonce,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",       // does not extend the client's nonce
		"r=" + rfcNonce + ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", // adds nothing to it
		"r=" + rfcNonce + "x,s=!!,i=4096",
		"r=" + rfcNonce + "x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0",
		"r=" + rfcNonce + "x,s=W22ZaJ0SNY7soEsUEjb6gQ==",
	} {
		c := rfcClient("pencil", nil)
		c.first()
		if _, err := c.final([]byte(sf)); err == nil {
			t.Errorf("server-first %q accepted", sf)
		}
	}
}

func TestMD5Answer(t *testing.T) {
	// psql's answer for user "bob", password "pw", salt 01020304, computed with PostgreSQL's
	// recipe md5(md5(password || user) || salt) outside this package's helpers.
	salt := [4]byte{1, 2, 3, 4}
	if got, want := md5Answer(md5Hash("pw", "bob"), salt), "md5"+md5hex(md5hex("pwbob")+"\x01\x02\x03\x04"); got != want {
		t.Fatalf("md5Answer = %s, want %s", got, want)
	}
}
