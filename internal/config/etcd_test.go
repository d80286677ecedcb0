package config

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestEtcdTLSKeys(t *testing.T) {
	files := newTLSFiles(t)
	bin := fakeBinDir(t, "15.18")
	doc := baseDoc(t, bin)
	set(doc, "etcd3.protocol", "https")
	set(doc, "etcd3.cacert", files.cert)
	set(doc, "etcd3.cert", files.cert)
	set(doc, "etcd3.key", files.key)
	c, err := Parse(marshal(t, doc), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Etcd.CACert != files.cert || c.Etcd.Cert != files.cert || c.Etcd.Key != files.key {
		t.Fatalf("etcd %+v", c.Etcd)
	}
	tc, err := c.Etcd.TLSConfig()
	if err != nil || tc == nil || tc.RootCAs == nil || len(tc.Certificates) != 1 || tc.MinVersion == 0 {
		t.Fatalf("TLSConfig %+v, %v", tc, err)
	}

	t.Run("combined cert without key, relative paths made absolute", func(t *testing.T) {
		dir := filepath.Dir(files.combined)
		t.Chdir(dir)
		doc := baseDoc(t, bin)
		set(doc, "etcd", map[string]any{"hosts": "127.0.0.1:2379", "protocol": "https", "cert": filepath.Base(files.combined)})
		delete(doc, "etcd3")
		c, err := Parse(marshal(t, doc), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if c.Etcd.Cert != files.combined || c.Etcd.KeyFile() != files.combined {
			t.Fatalf("etcd %+v", c.Etcd)
		}
		if tc, err := c.Etcd.TLSConfig(); err != nil || len(tc.Certificates) != 1 || tc.RootCAs != nil {
			t.Fatalf("TLSConfig %+v, %v", tc, err)
		}
	})

	t.Run("plain http has no TLS", func(t *testing.T) {
		c, err := Parse(marshal(t, baseDoc(t, bin)), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if tc, err := c.Etcd.TLSConfig(); tc != nil || err != nil {
			t.Fatalf("TLSConfig %+v, %v", tc, err)
		}
	})
}

func TestEtcdTLSInvalid(t *testing.T) {
	files := newTLSFiles(t)
	missing := filepath.Join(t.TempDir(), "missing.pem")
	with := func(kv ...any) map[string]any {
		m := map[string]any{"protocol": "https"}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	cases := []struct {
		name   string
		keys   map[string]any
		decode bool // the error is a shape error, reported by Decode as well
		want   []string
	}{
		{"key without cert", with("key", files.key), true,
			[]string{"etcd3.cert: required when etcd3.key is set"}},
		{"cacert with http", map[string]any{"cacert": files.cert}, true,
			[]string{"etcd3.protocol: must be https when etcd3.cacert/cert is set"}},
		{"cert with explicit http", map[string]any{"protocol": "http", "cert": files.cert, "key": files.key}, true,
			[]string{"etcd3.protocol: must be https when etcd3.cacert/cert is set"}},
		{"cert without key holds no key", with("cert", files.cert), false,
			[]string{"etcd3.key: required: etcd3.cert (" + files.cert + ") holds no private key"}},
		{"cert unreadable", with("cert", missing, "key", files.key), false,
			[]string{"etcd3.cert: cannot read:", "missing.pem"}},
		{"key unreadable", with("cert", files.cert, "key", missing), false,
			[]string{"etcd3.key: cannot read:", "missing.pem"}},
		{"pair does not match", with("cert", files.cert, "key", files.otherKey), false,
			[]string{"etcd3.cert: certificate " + files.cert + " and key " + files.otherKey + " do not load as a pair"}},
		{"encrypted key", with("cert", files.cert, "key", files.encKey), false,
			[]string{"etcd3.key: " + files.encKey + " holds an encrypted private key"}},
		{"cacert without certificates", with("cacert", files.garbage), false,
			[]string{"etcd3.cacert: " + files.garbage + " holds no PEM certificates"}},
		{"cacert unreadable", with("cacert", missing), false,
			[]string{"etcd3.cacert: cannot read:"}},
		{"cert not a string", with("cert", map[string]any{"a": 1}), true,
			[]string{"etcd3.cert: must be a string"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			doc := baseDoc(t, fakeBinDir(t, "15.18"))
			for k, v := range tc.keys {
				set(doc, "etcd3."+k, v)
			}
			_, err := Parse(marshal(t, doc), nil, nil)
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "etcd3.") {
				t.Errorf("want one etcd3 error, got:\n%v", err)
			}
			_, derr := Decode(marshal(t, doc), nil, nil)
			if tc.decode != (derr != nil) {
				t.Errorf("Decode error %v, want an error: %v", derr, tc.decode)
			}
		})
	}
}

func TestEtcdTLSEnvOverrides(t *testing.T) {
	files := newTLSFiles(t)
	bin := fakeBinDir(t, "15.18")
	got := func(c *Config) [4]string { return [4]string{c.Etcd.Protocol, c.Etcd.CACert, c.Etcd.Cert, c.Etcd.Key} }
	t.Run("PATRONI_ETCD3_*", func(t *testing.T) {
		env := []string{"PATRONI_ETCD3_PROTOCOL=https", "PATRONI_ETCD3_CACERT=" + files.cert,
			"PATRONI_ETCD3_CERT=" + files.cert, "PATRONI_ETCD3_KEY=" + files.key}
		c, err := Parse(marshal(t, baseDoc(t, bin)), env, nil)
		if err != nil {
			t.Fatal(err)
		}
		if g, w := got(c), [4]string{"https", files.cert, files.cert, files.key}; !reflect.DeepEqual(g, w) {
			t.Errorf("got %v, want %v", g, w)
		}
	})
	t.Run("PGVIGIL_ wins, PATRONI_ETCD_ alias", func(t *testing.T) {
		env := []string{"PATRONI_ETCD_PROTOCOL=https", "PATRONI_ETCD3_CERT=" + files.garbage, "PGVIGIL_ETCD3_CERT=" + files.combined}
		c, err := Parse(marshal(t, baseDoc(t, bin)), env, nil)
		if err != nil {
			t.Fatal(err)
		}
		if g, w := got(c), [4]string{"https", "", files.combined, ""}; !reflect.DeepEqual(g, w) {
			t.Errorf("got %v, want %v", g, w)
		}
	})
	t.Run("env values are validated under their key", func(t *testing.T) {
		env := []string{"PATRONI_ETCD3_CACERT=" + files.garbage, "PATRONI_ETCD3_KEY=" + files.key}
		_, err := Parse(marshal(t, baseDoc(t, bin)), env, nil)
		for _, w := range []string{"etcd3.protocol: must be https", "etcd3.cert: required when etcd3.key is set",
			"etcd3.cacert: " + files.garbage + " holds no PEM certificates"} {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("error %v does not contain %q", err, w)
			}
		}
	})
}
