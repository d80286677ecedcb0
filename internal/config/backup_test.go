package config

import (
	"slices"
	"strings"
	"testing"
)

func TestBackupSection(t *testing.T) {
	doc := baseDoc(t, fakeBinDir(t, "15.18"))
	set(doc, "backup.repository", "/var/lib/pgvigil-repo")
	set(doc, "backup.schedule", "0 3 * * *")
	set(doc, "postgresql.create_replica_methods", []any{"pgvigil_backup", "basebackup"})
	key := strings.Repeat("ab", 32)
	c, err := Parse(marshal(t, doc), []string{"PGVIGIL_BACKUP_ENCRYPTION_KEY=" + key}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b := c.Backup
	if !b.Enabled() || b.CompressLevel != 3 || b.ProcessMax != 2 || b.ScheduleType != "full" || b.EncryptionKey != key {
		t.Errorf("defaults or env not applied: %+v", b)
	}
	if got := c.Postgres.CreateReplicaMethods; len(got) != 2 || got[0] != ReplicaFromBackup {
		t.Errorf("create_replica_methods = %v", got)
	}
	// Logs and errors are masked with Secrets(): the backup keys must be in it.
	set(doc, "backup.repository", "s3://bucket/pg")
	set(doc, "backup.s3_endpoint", "127.0.0.1:9000")
	set(doc, "backup.s3_access_key", "AKIA")
	set(doc, "backup.s3_secret_key", "s3-secret-value")
	if c, err = Parse(marshal(t, doc), []string{"PGVIGIL_BACKUP_ENCRYPTION_KEY=" + key}, nil); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{key, "s3-secret-value"} {
		if !slices.Contains(c.Secrets(), want) {
			t.Errorf("Secrets() lacks the backup key %q", want)
		}
	}
}

func TestBackupInvalid(t *testing.T) {
	cases := []struct {
		name string
		kv   map[string]any
		want string
	}{
		{"relative repository", map[string]any{"backup.repository": "repo"}, `backup.repository: must be an absolute directory path, got "repo"`},
		{"s3 without endpoint", map[string]any{"backup.repository": "s3://b/x"}, "backup.s3_endpoint: required"},
		{"s3 bad endpoint", map[string]any{"backup.repository": "s3://b/x", "backup.s3_endpoint": "nohost"}, "backup.s3_endpoint:"},
		{"s3 without keys", map[string]any{"backup.repository": "s3://b/x", "backup.s3_endpoint": "h:9000"}, "backup.s3_access_key: s3_access_key and s3_secret_key are required"},
		{"sftp without user", map[string]any{"backup.repository": "sftp://h/x"}, "backup.repository: \"sftp://h/x\": want sftp://user@host[:port]/absolute/path"},
		{"sftp without key", map[string]any{"backup.repository": "sftp://u@h/x"}, "backup.sftp_key_file: required"},
		{"sftp without known hosts", map[string]any{"backup.repository": "sftp://u@h/x", "backup.sftp_key_file": "/k"}, "backup.sftp_known_hosts: required"},
		{"level", map[string]any{"backup.repository": "/r", "backup.compress_level": 25}, "backup.compress_level: must be between 1 and 19, got 25"},
		{"process_max", map[string]any{"backup.repository": "/r", "backup.process_max": -1}, "backup.process_max: must be between 1 and 64, got -1"},
		{"key", map[string]any{"backup.repository": "/r", "backup.encryption_key": "abc"}, "backup.encryption_key: must be 64 hexadecimal digits"},
		{"retention", map[string]any{"backup.repository": "/r", "backup.retention_full": -2}, "backup.retention_full: must not be negative, got -2"},
		{"schedule", map[string]any{"backup.repository": "/r", "backup.schedule": "0 25 * * *"}, "backup.schedule: \"0 25 * * *\": hour field"},
		{"schedule without repository", map[string]any{"backup.schedule": "0 3 * * *"}, "backup.schedule: needs backup.repository"},
		{"schedule type", map[string]any{"backup.repository": "/r", "backup.schedule_type": "diff"}, `backup.schedule_type: must be full or incr, got "diff"`},
		{"replica method without repository", map[string]any{"postgresql.create_replica_methods": []any{"pgvigil_backup"}},
			"postgresql.create_replica_methods: pgvigil_backup needs backup.repository"},
		{"unknown replica method", map[string]any{"postgresql.create_replica_methods": []any{"wal_e"}},
			`postgresql.create_replica_methods: item 0: unknown method "wal_e"`},
		{"bootstrap method", map[string]any{"bootstrap.method": "wal_g"}, `bootstrap.method: must be initdb or pgvigil_restore, got "wal_g"`},
		{"restore bootstrap without repository", map[string]any{"bootstrap.method": "pgvigil_restore"}, "bootstrap.method: pgvigil_restore needs backup.repository"},
		{"restore bootstrap two targets", map[string]any{"backup.repository": "/r", "bootstrap.method": "pgvigil_restore",
			"bootstrap.pgvigil_restore.target_xid": "5", "bootstrap.pgvigil_restore.target_name": "x"}, "bootstrap.pgvigil_restore: at most one of"},
		{"restore bootstrap time", map[string]any{"backup.repository": "/r", "bootstrap.method": "pgvigil_restore",
			"bootstrap.pgvigil_restore.target_time": "yesterday"}, "bootstrap.pgvigil_restore.target_time: must be an RFC 3339 time"},
		{"restore bootstrap lsn", map[string]any{"backup.repository": "/r", "bootstrap.method": "pgvigil_restore",
			"bootstrap.pgvigil_restore.target_lsn": "12"}, `bootstrap.pgvigil_restore.target_lsn: must be an LSN like 0/3000060, got "12"`},
		{"level not a number", map[string]any{"backup.repository": "/r", "backup.compress_level": "high"}, `backup.compress_level: must be an integer, got "high"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			doc := baseDoc(t, fakeBinDir(t, "15.18"))
			for k, v := range tc.kv {
				set(doc, k, v)
			}
			_, err := Parse(marshal(t, doc), nil, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
