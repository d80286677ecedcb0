package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgvigil/pgvigil/internal/cluster"
)

func TestFindBinariesOnThisMachine(t *testing.T) {
	if _, err := os.Stat("/usr/lib/postgresql/15/bin/postgres"); err != nil {
		t.Skip("PostgreSQL 15 is not installed at /usr/lib/postgresql/15/bin")
	}
	dir, ver, err := FindBinaries("")
	if err != nil {
		t.Fatal(err)
	}
	if dir != "/usr/lib/postgresql/15/bin" || ver != 15 {
		t.Errorf("FindBinaries = %q, %d", dir, ver)
	}
	if dir, ver, err := FindBinaries("/usr/lib/postgresql/15/bin"); err != nil || dir != "/usr/lib/postgresql/15/bin" || ver != 15 {
		t.Errorf("FindBinaries(bin_dir) = %q, %d, %v", dir, ver, err)
	}
}

func TestFindBinariesSearch(t *testing.T) {
	real16 := fakeBinDir(t, "16.1")

	// PATH holding only symlinks to postgres and pg_ctl resolves to the real directory.
	links := t.TempDir()
	for _, b := range []string{"postgres", "pg_ctl"} {
		if err := os.Symlink(filepath.Join(real16, b), filepath.Join(links, b)); err != nil {
			t.Fatal(err)
		}
	}
	dir, ver, err := findBinaries("", binSearch{path: "/nonexistent" + string(os.PathListSeparator) + links})
	if err != nil || dir != real16 || ver != 16 {
		t.Errorf("via PATH symlinks: %q %d %v", dir, ver, err)
	}

	// Version directories are tried highest first, numerically.
	root := t.TempDir()
	for _, v := range []string{"9.6", "13", "17"} {
		if err := os.MkdirAll(filepath.Join(root, v), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(fakeBinDir(t, v+".0"), filepath.Join(root, v, "bin")); err != nil {
			t.Fatal(err)
		}
	}
	dir, ver, err = findBinaries("", binSearch{globs: []string{filepath.Join(root, "*", "bin")}})
	if err != nil || dir != filepath.Join(root, "17", "bin") || ver != 17 {
		t.Errorf("via glob: %q %d %v", dir, ver, err)
	}

	_, _, err = findBinaries("", binSearch{globs: []string{"/nonexistent/*/bin", "/nonexistent-*/bin"}})
	want := "postgresql.bin_dir: PostgreSQL server binaries not found (looked in: PATH, pg_config --bindir, /nonexistent/*/bin, /nonexistent-*/bin); install them, e.g. apt-get install -y postgresql-15"
	if err == nil || err.Error() != want {
		t.Errorf("not found: %v", err)
	}
}

func TestParseServerVersion(t *testing.T) {
	for out, want := range map[string]int{
		"postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n": 15,
		"postgres (PostgreSQL) 9.6.24\n":                         9,
		"postgres (PostgreSQL) 18beta1\n":                        18,
	} {
		if got, err := parseServerVersion(out); err != nil || got != want {
			t.Errorf("parseServerVersion(%q) = %d, %v", out, got, err)
		}
	}
	if _, err := parseServerVersion("garbage"); err == nil {
		t.Error("garbage parsed")
	}
}

func TestCheckDataDirRules(t *testing.T) {
	base := usableBase(t)
	mine := filepath.Join(base, "mine")
	if err := os.Mkdir(mine, 0o700); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(mine)
	uid, gid := owner(fi)
	me := osUser{name: "me", uid: uid, gid: gid}
	stranger := osUser{name: "stranger", uid: uid + 4242, gid: gid + 4242}
	if uid == 0 {
		stranger.uid, stranger.gid = 4242, 4242
	}
	cases := []struct {
		name   string
		dir    string
		u      osUser
		isRoot bool
		want   string // "" for no error
	}{
		{"create under own dir", filepath.Join(mine, "a", "data"), me, false, ""},
		{"existing own dir", mine, me, false, ""},
		{"existing dir of another user", mine, stranger, false, "is owned by"},
		{"existing dir, root agent can chown", mine, stranger, true, ""},
		{"ancestor not searchable", filepath.Join(mine, "data"), stranger, true, "not searchable (mode 0700"},
		{"parent not writable", filepath.Join(base, "data"), stranger, false, "is not writable"},
		{"relative", "data", me, false, "must be an absolute path"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := checkDataDir(tc.dir, tc.u, tc.isRoot)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("err = %v, want %q", err, tc.want)
			case err != nil && !strings.HasPrefix(err.Error(), "postgresql.data_dir: "):
				t.Errorf("err %q does not start with the key", err)
			}
		})
	}
}

func TestAddressHelpers(t *testing.T) {
	cases := []struct {
		listen, connect   string
		local, hosts, url string
		port              int
	}{
		{"0.0.0.0:5432", "10.0.0.1:5432", "127.0.0.1", "0.0.0.0", "postgres://10.0.0.1:5432/postgres", 5432},
		{"*:5433", "db1:5433", "127.0.0.1", "*", "postgres://db1:5433/postgres", 5433},
		{":::5434", "[fd00::1]:5434", "::1", "::", "postgres://[fd00::1]:5434/postgres", 5434},
		{"10.0.0.1, 127.0.0.1:5432", "", "10.0.0.1", "10.0.0.1,127.0.0.1", "postgres://10.0.0.1:5432/postgres", 5432},
		{"[::1]:5432", "", "::1", "::1", "postgres://[::1]:5432/postgres", 5432},
		{":5432", "h:5432", "127.0.0.1", "*", "postgres://h:5432/postgres", 5432},
	}
	for _, tc := range cases {
		c := &Config{Postgres: Postgres{Listen: tc.listen, ConnectAddress: tc.connect}}
		c.applyDefaults()
		if got := c.LocalConnHost(); got != tc.local {
			t.Errorf("%s: LocalConnHost = %q, want %q", tc.listen, got, tc.local)
		}
		if got := c.ListenHosts(); got != tc.hosts {
			t.Errorf("%s: ListenHosts = %q, want %q", tc.listen, got, tc.hosts)
		}
		if got := c.ListenPort(); got != tc.port {
			t.Errorf("%s: ListenPort = %d, want %d", tc.listen, got, tc.port)
		}
		if got := c.ConnURL(); got != tc.url {
			t.Errorf("%s: ConnURL = %q, want %q", tc.listen, got, tc.url)
		}
	}
}

func TestValidateDynamic(t *testing.T) {
	if err := ValidateDynamic(cluster.DefaultDynamicConfig()); err != nil {
		t.Errorf("defaults: %v", err)
	}
	dc := cluster.DefaultDynamicConfig()
	dc.TTL, dc.LoopWait, dc.RetryTimeout = 30, 10, 10
	if err := ValidateDynamic(dc); err != nil {
		t.Errorf("Patroni defaults: %v", err)
	}
	dc.TTL = 29
	if err := ValidateDynamic(dc); err == nil || err.Error() != "ttl: loop_wait (10) + 2*retry_timeout (10) = 30 exceeds ttl (29)" {
		t.Errorf("err = %v", err)
	}
}

func TestRestAPIListenNormalised(t *testing.T) {
	for in, want := range map[string]string{":::8008": "[::]:8008", ":8008": ":8008", "127.0.0.1:8008": "127.0.0.1:8008"} {
		c := &Config{RestAPI: RestAPI{Listen: in}}
		c.applyDefaults()
		if c.RestAPI.Listen != want {
			t.Errorf("restapi.listen %q -> %q, want %q", in, c.RestAPI.Listen, want)
		}
	}
}
