package config

import (
	"log/slog"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

// secretRef is one password of the configuration with its optional file.
type secretRef struct {
	key      string // dotted key of the password
	password *string
	file     *string
}

func (c *Config) secretRefs() []secretRef {
	a := &c.Postgres.Auth
	return []secretRef{
		{"restapi.authentication.password", &c.RestAPI.Auth.Password, &c.RestAPI.Auth.PasswordFile},
		{"etcd3.password", &c.Etcd.Password, &c.Etcd.PasswordFile},
		{"postgresql.authentication.superuser.password", &a.Superuser.Password, &a.Superuser.PasswordFile},
		{"postgresql.authentication.replication.password", &a.Replication.Password, &a.Replication.PasswordFile},
		{"postgresql.authentication.rewind.password", &a.Rewind.Password, &a.Rewind.PasswordFile},
	}
}

// passwordFiles reads every password_file into its password. The file's content is the
// password, without one trailing line break (editors add one). Errors name the key and the
// file, never the content.
func (d *decoder) passwordFiles(c *Config) {
	for _, s := range c.secretRefs() {
		if *s.file == "" {
			continue
		}
		fileKey := strings.TrimSuffix(s.key, "password") + "password_file"
		if *s.password != "" {
			d.fail(fileKey, "set either %s or password_file, not both", s.key)
			continue
		}
		path := absPath(*s.file)
		b, err := os.ReadFile(path) // #nosec G304 -- the operator names the file in the configuration
		if err != nil {
			d.fail(fileKey, "cannot read: %v", err)
			continue
		}
		pw := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		if pw == "" {
			d.fail(fileKey, "%s is empty", path)
			continue
		}
		*s.password, *s.file = pw, path
	}
}

// Secrets returns every password and key of the configuration (from the file, its password
// files or the environment), for redaction of logs and messages.
func (c *Config) Secrets() []string {
	var out []string
	for _, s := range c.secretRefs() {
		if *s.password != "" {
			out = append(out, *s.password)
		}
	}
	// The backup keys have no password_file of their own, but leak just as badly.
	for _, k := range []string{c.Backup.EncryptionKey, c.Backup.S3SecretKey} {
		if k != "" {
			out = append(out, k)
		}
	}
	return out
}

// warnReadableSecrets warns when a configuration file that itself holds passwords can be read
// by every user of the host: passwords belong in a 0600 file or in password_file.
func warnReadableSecrets(path string, data []byte, log *slog.Logger) {
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm()&0o004 == 0 || !holdsPasswords(data) {
		return
	}
	log.Warn("configuration file holds passwords and is readable by every user; chmod 600 it or use password_file",
		"file", path, "mode", fi.Mode().Perm().String())
}

// holdsPasswords reports whether a YAML document has a non-empty password (or keyfile_password)
// value anywhere.
func holdsPasswords(data []byte) bool {
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil {
		return false
	}
	var walk func(n *yaml.Node) bool
	walk = func(n *yaml.Node) bool {
		if n == nil {
			return false
		}
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i].Value, n.Content[i+1]
				if (k == "password" || k == "keyfile_password") && v.Kind == yaml.ScalarNode && v.Value != "" && v.ShortTag() != "!!null" {
					return true
				}
			}
		}
		for _, ch := range n.Content {
			if walk(ch) {
				return true
			}
		}
		return false
	}
	return walk(&doc)
}
