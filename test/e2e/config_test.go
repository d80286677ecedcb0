package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const validConfig = `scope: s
name: n1
restapi: {listen: "127.0.0.1:18008"}
etcd3: {hosts: "127.0.0.1:2379"}
postgresql:
  listen: "127.0.0.1:15432"
  data_dir: DATA
  authentication:
    superuser: {username: postgres, password: x}
    replication: {username: replicator, password: y}
`

func runValidate(t *testing.T, cfg string) (string, error) {
	t.Helper()
	dir := workDir(t)
	cfg = strings.ReplaceAll(cfg, "DATA", filepath.Join(dir, "data"))
	path := filepath.Join(dir, "node.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(binary, "node", "--validate", "-c", path).CombinedOutput()
	return string(out), err
}

// TestValidate runs the real binary: a valid file passes, each broken one exits non-zero naming its key.
func TestValidate(t *testing.T) {
	if out, err := runValidate(t, validConfig); err != nil {
		t.Fatalf("valid configuration refused: %v\n%s", err, out)
	}
	cases := []struct{ name, from, to, key string }{
		{"missing scope", "scope: s\n", "", "scope"},
		{"ttl not a number", "scope: s\n", "scope: s\nbootstrap: {dcs: {ttl: ten}}\n", "bootstrap.dcs.ttl"},
		{"ttl below 2", "scope: s\n", "scope: s\nbootstrap: {dcs: {ttl: 1}}\n", "bootstrap.dcs.ttl"},
		{"timing rule", "scope: s\n", "scope: s\nbootstrap: {dcs: {ttl: 10, loop_wait: 5, retry_timeout: 3}}\n", "loop_wait"},
		{"bad port", "127.0.0.1:18008", "127.0.0.1:99999", "restapi.listen"},
		{"no etcd hosts", `etcd3: {hosts: "127.0.0.1:2379"}`, "", "etcd3.hosts"},
		{"no replication password", "replicator, password: y", "replicator", "postgresql.authentication.replication.password"},
		{"missing binaries", "  listen:", "  bin_dir: /nonexistent\n  listen:", "postgresql.bin_dir"},
		{"data_dir is a file", "data_dir: DATA", "data_dir: /etc/hostname", "postgresql.data_dir"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := strings.Replace(validConfig, tc.from, tc.to, 1)
			if cfg == validConfig {
				t.Fatalf("case did not change the configuration")
			}
			out, err := runValidate(t, cfg)
			if err == nil {
				t.Fatalf("accepted:\n%s", out)
			}
			if !strings.Contains(out, tc.key) {
				t.Fatalf("error does not name %q:\n%s", tc.key, out)
			}
		})
	}
}

func TestVersionAndHelp(t *testing.T) {
	out, err := exec.Command(binary, "version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "pgvigil") || !strings.Contains(string(out), "go1.") {
		t.Fatalf("version: %v %s", err, out)
	}
	for _, sub := range []string{"node", "demo", "bench", "version"} {
		out, err := exec.Command(binary, sub, "--help").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Usage:") {
			t.Fatalf("%s --help: %v %s", sub, err, out)
		}
	}
}
