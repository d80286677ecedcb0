package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Proxy is the configuration of `pgvigil proxy` (proxy.yaml). Its keys follow PgBouncer's names
// where PgBouncer has the setting (pool_mode, max_client_conn, server_idle_timeout …).
type Proxy struct {
	Scope     string    `yaml:"scope"`
	Namespace string    `yaml:"namespace"`
	Name      string    `yaml:"name"` // this proxy's name in logs and metrics
	Etcd      ProxyEtcd `yaml:"etcd3"`

	Listen ProxyListen `yaml:"listen"`
	TLS    ProxyTLS    `yaml:"tls"`
	// ClientTLSSSLMode is what the proxy asks of its clients, as PgBouncer's client_tls_sslmode:
	// disable (TLS not offered), allow or prefer (offered), require (clients without TLS are
	// refused). Empty in the file: prefer when tls.cert is set, disable otherwise.
	ClientTLSSSLMode string `yaml:"client_tls_sslmode"`
	// ServerTLSSSLMode is libpq's sslmode for connections to PostgreSQL.
	ServerTLSSSLMode string `yaml:"server_tls_sslmode"`
	ServerTLSCAFile  string `yaml:"server_tls_ca_file"`

	// RestAPI is how the proxy calls the members' REST APIs (GET /primary before routing to a
	// new leader): the keys of a node's restapi section that matter to a client.
	RestAPI ProxyRestAPI `yaml:"restapi"`

	Auth ProxyAuth `yaml:"auth"`

	// TrackExtraParameters are startup parameters, besides the ones PostgreSQL reports, that
	// follow the client onto whichever server runs its transaction (PgBouncer's
	// track_extra_parameters). IgnoreStartupParameters are accepted and dropped; any other
	// startup parameter is refused.
	TrackExtraParameters    NameList `yaml:"track_extra_parameters"`
	IgnoreStartupParameters NameList `yaml:"ignore_startup_parameters"`

	PoolMode               string   `yaml:"pool_mode"`
	PoolSize               int      `yaml:"pool_size"`
	MaxClientConn          int      `yaml:"max_client_conn"`
	ServerIdleTimeout      Duration `yaml:"server_idle_timeout"`
	ServerLifetime         Duration `yaml:"server_lifetime"`
	QueryWaitTimeout       Duration `yaml:"query_wait_timeout"`
	StartupTimeout         Duration `yaml:"startup_timeout"`
	SwitchoverDrainTimeout Duration `yaml:"switchover_drain_timeout"`
	// MemberRefresh is how often member keys (replica lag, state) are re-read; the leader and
	// failover keys are followed by a watch, not by this.
	MemberRefresh  Duration `yaml:"member_refresh"`
	MaxMessageSize int      `yaml:"max_message_size"`
	// Threads caps the cores the proxy runs on (GOMAXPROCS); 0, the default, is every core
	// the process may use. 1 makes it single-threaded like PgBouncer.
	Threads int `yaml:"threads"`

	ReadOnly ProxyReadOnly `yaml:"read_only"`
	// Pools overrides pool_mode and pool_size for "database" or "database/user".
	Pools map[string]ProxyPool `yaml:"pools"`
}

// ProxyEtcd is how the proxy reaches the store (same keys as a node's etcd3 section).
type ProxyEtcd struct {
	Hosts    HostList `yaml:"hosts"`
	Protocol string   `yaml:"protocol"`
	Username string   `yaml:"username"`
	Password string   `yaml:"password"`
	CACert   string   `yaml:"cacert"`
	Cert     string   `yaml:"cert"`
	Key      string   `yaml:"key"`
}

// HostList accepts "a:1,b:2" or a YAML list.
type HostList []string

// UnmarshalYAML implements yaml.Unmarshaler.
func (h *HostList) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		*h = nil
		for _, s := range strings.Split(n.Value, ",") {
			if s = strings.TrimSpace(s); s != "" {
				*h = append(*h, s)
			}
		}
		return nil
	case yaml.SequenceNode:
		var l []string
		if err := n.Decode(&l); err != nil {
			return err
		}
		*h = l
		return nil
	}
	return errors.New("want host:port, a comma-separated string or a list")
}

// ProxyListen are the proxy's addresses.
type ProxyListen struct {
	ReadWrite string `yaml:"read_write"`
	ReadOnly  string `yaml:"read_only"` // empty: no read-only listener
	HTTP      string `yaml:"http"`      // metrics, pools, pause/resume; empty: none
}

// ProxyTLS is the certificate offered to clients that ask for SSL; reloaded on SIGHUP.
type ProxyTLS struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// ProxyRestAPI are the TLS files for https REST APIs, named as in a node's restapi section.
// cafile holds the CAs the members' certificates are verified against (empty: the system's);
// certfile and keyfile are the client certificate presented to APIs that verify clients
// (keyfile may be left out when certfile holds the key too). Re-read on SIGHUP.
type ProxyRestAPI struct {
	CAFile   string `yaml:"cafile"`
	CertFile string `yaml:"certfile"`
	KeyFile  string `yaml:"keyfile"`
}

// ProxyAuth says how clients authenticate to the proxy. The proxy logs in to PostgreSQL as
// the same user, with the auth file's plain-text password or, for users stored as hashes,
// with what the client's own login gave it (SCRAM keys, md5 hash).
type ProxyAuth struct {
	Type string `yaml:"type"` // scram-sha-256, md5 or trust
	File string `yaml:"file"` // PgBouncer userlist.txt format
	// User enables auth_query: clients not in the file are looked up with Query, run as User
	// on the primary in database DBName (default: the client's database). User's own password
	// comes from PasswordFile or the auth file.
	User         string `yaml:"user"`
	PasswordFile string `yaml:"password_file"`
	Query        string `yaml:"query"`
	DBName       string `yaml:"dbname"`
}

// DefaultAuthQuery is PgBouncer's default auth_query.
const DefaultAuthQuery = "SELECT usename, passwd FROM pg_catalog.pg_shadow WHERE usename=$1"

// NameList accepts "a, b" or a YAML list of names.
type NameList []string

// UnmarshalYAML implements yaml.Unmarshaler.
func (l *NameList) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		*l = NameList{}
		if n.ShortTag() == "!!null" {
			return nil
		}
		for _, s := range strings.Split(n.Value, ",") {
			if s = strings.TrimSpace(s); s != "" {
				*l = append(*l, s)
			}
		}
		return nil
	case yaml.SequenceNode:
		var v []string
		if err := n.Decode(&v); err != nil {
			return err
		}
		*l = NameList(v)
		return nil
	}
	return errors.New("want a comma-separated string or a list of names")
}

// ProxyReadOnly shapes the read-only listener's routing.
type ProxyReadOnly struct {
	Balance           string `yaml:"balance"` // round-robin or least-connections
	MaxLag            int64  `yaml:"max_lag"` // bytes of replay lag behind the leader; 0: no limit
	FallbackToPrimary bool   `yaml:"fallback_to_primary"`
}

// ProxyPool overrides pool settings for one database or database/user.
type ProxyPool struct {
	PoolMode string `yaml:"pool_mode"`
	PoolSize int    `yaml:"pool_size"`
}

// Duration is a YAML duration: "250ms", "30s", or a number of seconds.
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("want a duration such as 30s")
	}
	if secs, err := strconv.ParseFloat(n.Value, 64); err == nil {
		*d = Duration(secs * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("%q is not a duration (e.g. 30s, 500ms)", n.Value)
	}
	*d = Duration(v)
	return nil
}

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Pool modes.
const (
	PoolSession     = "session"
	PoolTransaction = "transaction"
)

// DefaultProxy holds the defaults a proxy.yaml overrides.
func DefaultProxy() Proxy {
	return Proxy{
		Namespace:              "/service/",
		Name:                   "proxy",
		ServerTLSSSLMode:       "prefer",
		Auth:                   ProxyAuth{Type: "scram-sha-256", Query: DefaultAuthQuery},
		TrackExtraParameters:   NameList{"search_path", "extra_float_digits"},
		PoolMode:               PoolTransaction,
		PoolSize:               20,
		MaxClientConn:          10000,
		ServerIdleTimeout:      Duration(10 * time.Minute),
		ServerLifetime:         Duration(time.Hour),
		QueryWaitTimeout:       Duration(2 * time.Minute),
		StartupTimeout:         Duration(10 * time.Second),
		SwitchoverDrainTimeout: Duration(10 * time.Second),
		MemberRefresh:          Duration(2 * time.Second),
		MaxMessageSize:         64 << 20,
		ReadOnly:               ProxyReadOnly{Balance: "round-robin"},
	}
}

// LoadProxy reads, decodes and validates a proxy configuration file. Relative file paths in it
// are taken relative to the file's directory.
func LoadProxy(path string) (*Proxy, error) {
	b, err := os.ReadFile(path) // #nosec G304 -- the configuration file the operator named with -c
	if err != nil {
		return nil, fmt.Errorf("while reading %s: %w", path, err)
	}
	p, err := ParseProxy(b)
	if err != nil {
		return nil, err
	}
	base := filepath.Dir(path)
	for _, f := range []*string{&p.Auth.File, &p.Auth.PasswordFile, &p.TLS.Cert, &p.TLS.Key, &p.ServerTLSCAFile, &p.Etcd.CACert, &p.Etcd.Cert, &p.Etcd.Key,
		&p.RestAPI.CAFile, &p.RestAPI.CertFile, &p.RestAPI.KeyFile} {
		if *f != "" && !filepath.IsAbs(*f) {
			*f = filepath.Join(base, *f)
		}
	}
	if errs := p.checkFiles(); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return p, nil
}

// ParseProxy decodes and validates YAML; it does not read the files the configuration names.
func ParseProxy(b []byte) (*Proxy, error) {
	p := DefaultProxy()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("while decoding the proxy configuration: %w", err)
	}
	if p.ClientTLSSSLMode == "" {
		p.ClientTLSSSLMode = "disable"
		if p.TLS.Cert != "" {
			p.ClientTLSSSLMode = "prefer"
		}
	}
	if errs := p.problems(); len(errs) > 0 {
		out := make([]error, len(errs))
		for i, e := range errs {
			out[i] = e
		}
		return nil, errors.Join(out...)
	}
	return &p, nil
}

func (p *Proxy) problems() []*FieldError {
	var out []*FieldError
	add := func(key, format string, args ...any) {
		out = append(out, &FieldError{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	if strings.Trim(p.Scope, "/") == "" {
		add("scope", "required: the cluster's scope, as in the nodes' configuration")
	}
	if len(p.Etcd.Hosts) == 0 {
		add("etcd3.hosts", "required: at least one etcd endpoint")
	}
	if p.Etcd.Protocol != "" && p.Etcd.Protocol != "http" && p.Etcd.Protocol != "https" {
		add("etcd3.protocol", "must be http or https, got %q", p.Etcd.Protocol)
	}
	if (p.Etcd.CACert != "" || p.Etcd.Cert != "") && p.Etcd.Protocol != "https" {
		add("etcd3.protocol", "must be https when cacert or cert is set")
	}
	checkAddr := func(key, v string, required bool) {
		if v == "" {
			if required {
				add(key, "required: host:port to listen on")
			}
			return
		}
		if _, port, err := net.SplitHostPort(v); err != nil {
			add(key, "want host:port, got %q", v)
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			add(key, "port %q is not a number between 0 and 65535", port)
		}
	}
	checkAddr("listen.read_write", p.Listen.ReadWrite, true)
	checkAddr("listen.read_only", p.Listen.ReadOnly, false)
	checkAddr("listen.http", p.Listen.HTTP, false)
	if p.Listen.ReadOnly != "" && p.Listen.ReadOnly == p.Listen.ReadWrite {
		add("listen.read_only", "must differ from listen.read_write")
	}
	if (p.TLS.Cert == "") != (p.TLS.Key == "") {
		add("tls", "cert and key go together: set both or neither")
	}
	switch p.ClientTLSSSLMode {
	case "disable":
	case "allow", "prefer", "require":
		if p.TLS.Cert == "" {
			add("client_tls_sslmode", "%s needs a certificate to offer: set tls.cert and tls.key", p.ClientTLSSSLMode)
		}
	default:
		add("client_tls_sslmode", "must be one of disable, allow, prefer, require; got %q", p.ClientTLSSSLMode)
	}
	if p.RestAPI.KeyFile != "" && p.RestAPI.CertFile == "" {
		add("restapi.certfile", "required when restapi.keyfile is set")
	}
	switch p.ServerTLSSSLMode {
	case "disable", "allow", "prefer", "require", "verify-ca", "verify-full":
	default:
		add("server_tls_sslmode", "must be one of disable, allow, prefer, require, verify-ca, verify-full; got %q", p.ServerTLSSSLMode)
	}
	out = append(out, p.Auth.problems()...)
	out = append(out, p.startupParameterProblems()...)
	checkMode := func(key, v string) {
		if v != PoolSession && v != PoolTransaction {
			add(key, "must be session or transaction, got %q", v)
		}
	}
	checkMode("pool_mode", p.PoolMode)
	if p.PoolSize < 1 {
		add("pool_size", "must be at least 1, got %d", p.PoolSize)
	}
	if p.MaxClientConn < 1 {
		add("max_client_conn", "must be at least 1, got %d", p.MaxClientConn)
	}
	for key, d := range map[string]Duration{"server_idle_timeout": p.ServerIdleTimeout, "server_lifetime": p.ServerLifetime,
		"query_wait_timeout": p.QueryWaitTimeout, "startup_timeout": p.StartupTimeout,
		"switchover_drain_timeout": p.SwitchoverDrainTimeout, "member_refresh": p.MemberRefresh} {
		if d <= 0 {
			add(key, "must be positive, got %s", d.D())
		}
	}
	if p.MaxMessageSize < 1024 {
		add("max_message_size", "must be at least 1024 bytes, got %d", p.MaxMessageSize)
	}
	// PostgreSQL itself accepts no message over 1 GiB (PQ_LARGE_MESSAGE_LIMIT); the bound
	// also keeps a rewritten message's length inside the protocol's 32-bit field.
	if p.MaxMessageSize > 1<<30 {
		add("max_message_size", "must be at most 1 GiB (1073741824 bytes, PostgreSQL's own limit), got %d", p.MaxMessageSize)
	}
	if p.Threads < 0 || p.Threads > 1024 {
		add("threads", "must be between 0 (every core) and 1024, got %d", p.Threads)
	}
	if b := p.ReadOnly.Balance; b != "round-robin" && b != "least-connections" {
		add("read_only.balance", "must be round-robin or least-connections, got %q", b)
	}
	if p.ReadOnly.MaxLag < 0 {
		add("read_only.max_lag", "must not be negative, got %d", p.ReadOnly.MaxLag)
	}
	for name, pl := range p.Pools {
		key := "pools." + name
		if db, user, _ := strings.Cut(name, "/"); db == "" || strings.Contains(user, "/") {
			add(key, "name must be database or database/user")
		}
		if pl.PoolMode != "" {
			checkMode(key+".pool_mode", pl.PoolMode)
		}
		if pl.PoolSize < 0 {
			add(key+".pool_size", "must not be negative, got %d", pl.PoolSize)
		}
	}
	return out
}

func (p *Proxy) checkFiles() []error {
	var errs []error
	for _, f := range []struct{ key, path string }{{"auth.file", p.Auth.File}, {"auth.password_file", p.Auth.PasswordFile}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			errs = append(errs, &FieldError{Key: f.key, Msg: fmt.Sprintf("cannot read: %v", err)})
		}
	}
	if p.TLS.Cert != "" {
		errs = append(errs, checkTLSFiles(tlsFileKeys{"tls.cert", "tls.key", ""}, p.TLS.Cert, p.TLS.Key, "")...)
	}
	errs = append(errs, checkTLSFiles(tlsFileKeys{"restapi.certfile", "restapi.keyfile", "restapi.cafile"},
		p.RestAPI.CertFile, p.RestAPI.KeyFile, p.RestAPI.CAFile)...)
	if p.ServerTLSCAFile != "" {
		errs = append(errs, checkTLSFiles(tlsFileKeys{ca: "server_tls_ca_file"}, "", "", p.ServerTLSCAFile)...)
	}
	if p.Etcd.Protocol == "https" {
		if _, err := EtcdClientTLS(p.Etcd.CACert, p.Etcd.Cert, p.Etcd.Key); err != nil {
			errs = append(errs, &FieldError{Key: "etcd3", Msg: err.Error()})
		}
	}
	return errs
}

// Secrets returns the passwords the proxy configuration itself holds (the auth file's are the
// proxy's to mask), for redaction of logs and messages.
func (p *Proxy) Secrets() []string {
	if p.Etcd.Password == "" {
		return nil
	}
	return []string{p.Etcd.Password}
}

// PoolFor returns the pool mode and size for a database and user.
func (p *Proxy) PoolFor(db, user string) (mode string, size int) {
	mode, size = p.PoolMode, p.PoolSize
	for _, name := range []string{db, db + "/" + user} {
		if o, ok := p.Pools[name]; ok {
			if o.PoolMode != "" {
				mode = o.PoolMode
			}
			if o.PoolSize > 0 {
				size = o.PoolSize
			}
		}
	}
	return mode, size
}
