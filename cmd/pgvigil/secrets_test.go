package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestErrorMessageMasksSecrets: what main prints for a failed command holds neither the
// passwords of the configuration the command was given, nor those of the environment, nor one
// written into a connection string.
func TestErrorMessageMasksSecrets(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "users.txt")
	if err := os.WriteFile(users, []byte(`"app" "userlist-pw-1"`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "proxy.yaml")
	yaml := "scope: demo\netcd3: {hosts: 127.0.0.1:2379, username: root, password: etcd-pw-2}\n" +
		"listen: {read_write: 127.0.0.1:6432}\nauth: {type: scram-sha-256, file: users.txt}\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := proxyCmd()
	if err := cmd.ParseFlags([]string{"-c", cfg}); err != nil {
		t.Fatal(err)
	}
	err := fmt.Errorf("while connecting with %q: %w", "host=db user=app password=dsn-pw-3 sslmode=verify-full",
		errors.New("etcd://root:url-pw-4@127.0.0.1:2379 refused root/etcd-pw-2; app/userlist-pw-1; env env-pw-5"))
	got := errorMessage(cmd, err, []string{"PGVIGIL_ETCD3_PASSWORD=env-pw-5", "HOME=/root"})
	for _, pw := range []string{"userlist-pw-1", "etcd-pw-2", "dsn-pw-3", "url-pw-4", "env-pw-5"} {
		if strings.Contains(got, pw) {
			t.Errorf("printed error holds %q: %s", pw, got)
		}
	}
	if !strings.Contains(got, "host=db user=app") || !strings.Contains(got, "refused root/") {
		t.Errorf("masking removed more than the passwords: %s", got)
	}
	// A command without a configuration still has its connection strings masked.
	if got := errorMessage(&cobra.Command{Use: "list"}, errors.New("password=abc123 rejected"), nil); got != "password=****** rejected" {
		t.Errorf("errorMessage without configuration = %q", got)
	}
}
