package redact

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	x := New("s3cret", "", "ab", "s3cret-longer")
	for in, want := range map[string]string{
		"password=s3cret":                   "password=" + Mask,
		"s3cret-longer and s3cret":          Mask + " and " + Mask,
		"ab is too short to mask":           "ab is too short to mask",
		"nothing here":                      "nothing here",
		"postgres://u:s3cret@h/db?x=s3cret": "postgres://u:" + Mask + "@h/db?x=" + Mask,
	} {
		if got := x.String(in); got != want {
			t.Errorf("String(%q) = %q, want %q", in, got, want)
		}
	}
	var none *Redactor
	if none.String("s3cret") != "s3cret" || New().String("s3cret") != "s3cret" {
		t.Error("an empty redactor changed its input")
	}
}

func TestErrorKeepsChain(t *testing.T) {
	x := New("hunter22")
	err := x.Error(fmt.Errorf("connect with password hunter22: %w", fs.ErrPermission))
	if strings.Contains(err.Error(), "hunter22") || !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("Error = %v (Is ErrPermission: %v)", err, errors.Is(err, fs.ErrPermission))
	}
	plain := errors.New("nothing secret")
	if x.Error(plain) != plain || x.Error(nil) != nil {
		t.Error("an error without secrets was wrapped")
	}
}

func TestHandler(t *testing.T) {
	var buf bytes.Buffer
	x := New("hunter22", "t0psecret")
	log := slog.New(x.Handler(slog.NewTextHandler(&buf, nil)))
	log = log.With("dsn", "user=a password=hunter22")
	log.WithGroup("g").Info("login as t0psecret failed",
		"err", errors.New("bad password hunter22"),
		"n", 3,
		slog.Group("inner", "conninfo", "password=t0psecret"),
		"list", []string{"hunter22"})
	out := buf.String()
	for _, s := range []string{"hunter22", "t0psecret"} {
		if strings.Contains(out, s) {
			t.Errorf("secret %q in log output: %s", s, out)
		}
	}
	for _, want := range []string{"n=3", "g.inner.conninfo=\"password=" + Mask + "\"", "dsn=\"user=a password=" + Mask + "\""} {
		if !strings.Contains(out, want) {
			t.Errorf("want %q in %s", want, out)
		}
	}
}

func TestConninfoMasksPasswordsInConnectionStrings(t *testing.T) {
	for in, want := range map[string]string{
		"host=h port=5432 user=u password=hunter22 dbname=d": "host=h port=5432 user=u password=" + Mask + " dbname=d",
		"host=h password = 'a b\\' c' sslmode=verify-full":   "host=h password = " + Mask + " sslmode=verify-full",
		"PASSWORD=x1": "PASSWORD=" + Mask,
		"dial postgres://app:s3cr%40t@db:5432/app?sslmode=require":    "dial postgres://app:" + Mask + "@db:5432/app?sslmode=require",
		`bad --dcs-url "etcds://root:pw@127.0.0.1:2379": refused`:     `bad --dcs-url "etcds://root:` + Mask + `@127.0.0.1:2379": refused`,
		"postgres://app@db/app and https://db:8008/patroni unchanged": "postgres://app@db/app and https://db:8008/patroni unchanged",
		"no password given; password_encryption=scram-sha-256":        "no password given; password_encryption=scram-sha-256",
	} {
		if got := Conninfo(in); got != want {
			t.Errorf("Conninfo(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMessageMasksKnownSecretsAndConnectionStrings(t *testing.T) {
	x := New("t0psecret")
	err := fmt.Errorf("while connecting with %q: %w", "host=db user=u password=other-pw", errors.New("auth failed for t0psecret"))
	got := x.Message(err)
	if strings.Contains(got, "other-pw") || strings.Contains(got, "t0psecret") || !strings.Contains(got, "password="+Mask) {
		t.Errorf("Message = %q", got)
	}
	if x.Message(nil) != "" || (*Redactor)(nil).Message(errors.New("password=abc")) != "password="+Mask {
		t.Error("nil error or nil redactor mishandled")
	}
}
