package proxy

import (
	"crypto/md5"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func TestParseUserlist(t *testing.T) {
	u, err := ParseUserlist(strings.NewReader(`; comment
# another
"alice" "s3cret"
"bob" "md5`+strings.Repeat("a", 32)+`"
"quo""ted" "pa""ss"
"carol" "SCRAM-SHA-256$4096:c2FsdHNhbHQ=$`+base64.StdEncoding.EncodeToString(make([]byte, 32))+`:`+base64.StdEncoding.EncodeToString(make([]byte, 32))+`"
`), "users.txt")
	if err != nil {
		t.Fatal(err)
	}
	if u["alice"].plain != "s3cret" || u["alice"].scram == nil || u["alice"].md5 != md5Hash("s3cret", "alice") {
		t.Errorf("alice: %+v", u["alice"])
	}
	if u["bob"].plain != "" || u["bob"].md5 == "" || u["bob"].scram != nil {
		t.Errorf("bob: %+v", u["bob"])
	}
	if u[`quo"ted`] == nil || u[`quo"ted`].plain != `pa"ss` {
		t.Errorf("doubled quotes: %+v", u)
	}
	if c := u["carol"]; c == nil || c.scram == nil || c.scram.iter != 4096 || string(c.scram.salt) != "saltsalt" {
		t.Errorf("carol: %+v", c)
	}
	for in, want := range map[string]string{
		`alice s3cret`:               "users.txt:1: field 1 is not quoted",
		`"alice"`:                    `users.txt:1: want "user" "password"`,
		`"alice" "unterminated`:      "users.txt:1: field 2 has no closing quote",
		`"x" "SCRAM-SHA-256$4096$a"`: `users.txt:1: user "x": SCRAM verifier`,
		`"x" "md5zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"`: "md5 hash is not hexadecimal",
	} {
		if _, err := ParseUserlist(strings.NewReader(in), "users.txt"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", in, err, want)
		}
	}
}

// clientFinal computes a client-final-message as RFC 5802 describes, independently of the
// server code under test.
func clientFinal(t *testing.T, password, clientFirstBare, serverFirst string) (string, []byte) {
	t.Helper()
	var nonce, salt string
	iter := 0
	for _, a := range strings.Split(serverFirst, ",") {
		switch a[:2] {
		case "r=":
			nonce = a[2:]
		case "s=":
			salt = a[2:]
		case "i=":
			for _, ch := range a[2:] {
				iter = iter*10 + int(ch-'0')
			}
		}
	}
	rawSalt, _ := base64.StdEncoding.DecodeString(salt)
	salted, err := pbkdf2.Key(sha256.New, password, rawSalt, iter, 32)
	if err != nil {
		t.Fatal(err)
	}
	ck := hmacSum(salted, []byte("Client Key"))
	stored := sha256.Sum256(ck)
	without := "c=biws,r=" + nonce
	auth := clientFirstBare + "," + serverFirst + "," + without
	sig := hmacSum(stored[:], []byte(auth))
	proof := make([]byte, 32)
	for i := range proof {
		proof[i] = ck[i] ^ sig[i]
	}
	serverSig := hmacSum(hmacSum(salted, []byte("Server Key")), []byte(auth))
	return without + ",p=" + base64.StdEncoding.EncodeToString(proof), serverSig
}

func TestSCRAMExchange(t *testing.T) {
	sec, err := newSecret("alice", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, password string
		fake           bool
		wantErr        error
	}{
		{"right password", "s3cret", false, nil},
		{"wrong password", "guess", false, errBadPassword},
		{"unknown user", "s3cret", true, errBadPassword},
	} {
		s := &scramServer{sec: sec.scram, fake: tc.fake}
		bare := "n=,r=clientnonce123"
		first, err := s.first([]byte("n,," + bare))
		if err != nil {
			t.Fatal(err)
		}
		final, wantSig := clientFinal(t, tc.password, bare, first)
		got, err := s.final([]byte(final))
		if !errors.Is(err, tc.wantErr) {
			t.Fatalf("%s: %v, want %v", tc.name, err, tc.wantErr)
		}
		if err == nil && got != "v="+base64.StdEncoding.EncodeToString(wantSig) {
			t.Fatalf("%s: server signature %q", tc.name, got)
		}
	}
	s := &scramServer{sec: sec.scram}
	for _, bad := range []string{"p=tls-server-end-point,,n=,r=x", "n,,n=,s=nonce-missing", "garbage"} {
		if _, err := s.first([]byte(bad)); err == nil {
			t.Errorf("client-first %q accepted", bad)
		}
	}
	if _, err := s.first([]byte("n,,n=,r=abc")); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"c=biws,r=othernonce,p=" + base64.StdEncoding.EncodeToString(make([]byte, 32)), "c=biws,r=abc", "c=biws,p=!!"} {
		if _, err := s.final([]byte(bad)); err == nil {
			t.Errorf("client-final %q accepted", bad)
		}
	}
}

func TestMD5(t *testing.T) {
	sec, _ := newSecret("bob", "pw")
	salt := [4]byte{1, 2, 3, 4}
	inner := md5.Sum([]byte("pwbob"))
	outer := md5.Sum(append([]byte(hex.EncodeToString(inner[:])), salt[:]...))
	if !checkMD5(sec, salt, "md5"+hex.EncodeToString(outer[:])) {
		t.Fatal("right md5 answer refused")
	}
	if checkMD5(sec, salt, "md5"+strings.Repeat("0", 32)) || checkMD5(nil, salt, "x") {
		t.Fatal("wrong md5 answer accepted")
	}
}

func md5hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}
