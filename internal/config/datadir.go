package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// osUser is the identity whose permissions decide whether PostgreSQL can use a path.
type osUser struct {
	name     string
	uid, gid int
	groups   []int
}

func (u osUser) inGroup(gid int) bool {
	if gid == u.gid {
		return true
	}
	for _, g := range u.groups {
		if g == gid {
			return true
		}
	}
	return false
}

// can reports whether u has the permission bit (4 read, 2 write, 1 search) on fi. It reads the
// classic mode bits only; ACLs and read-only mounts are left to the real start to discover.
func (u osUser) can(fi fs.FileInfo, bit fs.FileMode) bool {
	if u.uid == 0 {
		return true
	}
	uid, gid := owner(fi)
	perm := fi.Mode().Perm()
	switch {
	case uid == u.uid:
		return perm&(bit<<6) != 0
	case u.inGroup(gid):
		return perm&(bit<<3) != 0
	default:
		return perm&bit != 0
	}
}

func owner(fi fs.FileInfo) (uid, gid int) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid), int(st.Gid)
	}
	return -1, -1
}

func ownerName(fi fs.FileInfo) string {
	uid, _ := owner(fi)
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return strconv.Itoa(uid)
}

// CheckDataDir verifies that PostgreSQL will be able to create or use postgresql.data_dir as the
// OS user it runs as: run_as when the agent is root, the agent's own user otherwise.
func (c *Config) CheckDataDir() error {
	euid := os.Geteuid()
	var u osUser
	if euid == 0 {
		var err error
		if u, err = lookupUser(c.Postgres.RunAs); err != nil {
			return err
		}
		if u.uid == 0 {
			return &FieldError{Key: "postgresql.run_as", Msg: fmt.Sprintf("PostgreSQL refuses to run as root; use an unprivileged OS user such as %q, not %q", defaultRunAs, c.Postgres.RunAs)}
		}
	} else {
		u = currentUser()
	}
	return checkDataDir(c.Postgres.DataDir, u, euid == 0)
}

func lookupUser(name string) (osUser, error) {
	pw, err := user.Lookup(name)
	if err != nil {
		var unknown user.UnknownUserError
		if errors.As(err, &unknown) {
			return osUser{}, &FieldError{Key: "postgresql.run_as", Msg: fmt.Sprintf("OS user %q does not exist", name)}
		}
		return osUser{}, &FieldError{Key: "postgresql.run_as", Msg: fmt.Sprintf("look up OS user %q: %v", name, err)}
	}
	return toOSUser(pw)
}

func toOSUser(pw *user.User) (osUser, error) {
	u := osUser{name: pw.Username}
	var err1, err2 error
	u.uid, err1 = strconv.Atoi(pw.Uid)
	u.gid, err2 = strconv.Atoi(pw.Gid)
	if err := errors.Join(err1, err2); err != nil {
		return osUser{}, &FieldError{Key: "postgresql.run_as", Msg: fmt.Sprintf("OS user %q has a non-numeric uid or gid: %v", pw.Username, err)}
	}
	if ids, err := pw.GroupIds(); err == nil {
		for _, id := range ids {
			if g, err := strconv.Atoi(id); err == nil {
				u.groups = append(u.groups, g)
			}
		}
	}
	return u, nil
}

func currentUser() osUser {
	u := osUser{name: strconv.Itoa(os.Geteuid()), uid: os.Geteuid(), gid: os.Getegid()}
	if pw, err := user.LookupId(strconv.Itoa(u.uid)); err == nil {
		u.name = pw.Username
	}
	u.groups, _ = os.Getgroups()
	return u
}

// checkDataDir walks from / to dir. Every existing ancestor must be searchable by u; a root agent
// can create and chown what is missing, so it needs nothing more, while an unprivileged agent
// needs to own an existing data directory (PostgreSQL refuses any other owner) or to be able to
// create it in the nearest existing ancestor.
func checkDataDir(dir string, u osUser, agentIsRoot bool) error {
	fail := func(format string, args ...any) error {
		return &FieldError{Key: "postgresql.data_dir", Msg: fmt.Sprintf(format, args...)}
	}
	unusable := func(format string, args ...any) error {
		return fail("%s is not usable by OS user %q: %s", dir, u.name, fmt.Sprintf(format, args...))
	}
	if !filepath.IsAbs(dir) {
		return fail("must be an absolute path, got %q", dir)
	}
	dir = filepath.Clean(dir)

	var chain []string // "/", "/a", "/a/b", ... dir
	for p := dir; ; p = filepath.Dir(p) {
		chain = append(chain, p)
		if p == filepath.Dir(p) {
			break
		}
	}
	var nearest string
	var nearestFI fs.FileInfo
	for i := len(chain) - 1; i >= 0; i-- {
		p := chain[i]
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			break
		}
		if err != nil {
			return fail("%s: %v", p, err)
		}
		if !fi.IsDir() {
			if p == dir {
				return fail("%s exists and is not a directory", dir)
			}
			return unusable("%s is not a directory", p)
		}
		if p != dir && !u.can(fi, 1) {
			return unusable("%s is not searchable (mode %04o, owner %s)", p, fi.Mode().Perm(), ownerName(fi))
		}
		nearest, nearestFI = p, fi
	}

	switch {
	case agentIsRoot:
		return nil
	case nearest == dir:
		if uid, _ := owner(nearestFI); uid != u.uid {
			return unusable("it is owned by %s; PostgreSQL requires its data directory to be owned by the user it runs as", ownerName(nearestFI))
		}
	case !u.can(nearestFI, 2) || !u.can(nearestFI, 1):
		return unusable("%s is not writable, so the data directory cannot be created in it (mode %04o, owner %s)",
			nearest, nearestFI.Mode().Perm(), ownerName(nearestFI))
	}
	return nil
}
