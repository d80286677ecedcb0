package localcluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/pgvigil/pgvigil/internal/certs"
)

// PGProxy is a `pgvigil proxy` process in front of the cluster.
type PGProxy struct {
	RW, RO, HTTP string // host:port of the read-write, read-only and HTTP listeners
	Dir          string
	ConfigPath   string
	LogPath      string
	// Under Options.TLS: the cluster CA clients verify the proxy against, the proxy's own
	// certificate (offered to clients, presented to the REST APIs) and a file holding the
	// superuser's password, for connection strings that must not show it. Empty otherwise.
	CA, Cert, Key, PassFile string
	cmd                     *exec.Cmd
	done                    chan struct{}
}

// StartProxy writes an auth file (the superuser with its password) and a proxy.yaml in dir,
// with extra YAML appended (keys given there must not repeat the generated ones, except auth
// and server_tls_sslmode, which replace the generated ones), starts the proxy and waits until
// it routes to a primary. Under Options.TLS the proxy gets a certificate from the cluster CA
// and is configured as TLS everywhere asks: clients must use TLS (client_tls_sslmode
// require), PostgreSQL is verified (verify-full against the CA), and the members' REST APIs
// are called with the CA and the proxy's certificate.
func (c *Cluster) StartProxy(ctx context.Context, dir, extra string) (*PGProxy, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	var ports [3]int
	for i := range ports {
		p, err := FreePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	users := filepath.Join(dir, "userlist.txt")
	if err := os.WriteFile(users, []byte(fmt.Sprintf("%q %q\n", Superuser, SuperPass)), 0o600); err != nil {
		return nil, err
	}
	px := &PGProxy{RW: fmt.Sprintf("127.0.0.1:%d", ports[0]), RO: fmt.Sprintf("127.0.0.1:%d", ports[1]),
		HTTP: fmt.Sprintf("127.0.0.1:%d", ports[2]), Dir: dir, ConfigPath: filepath.Join(dir, "proxy.yaml"), LogPath: filepath.Join(dir, "proxy.log")}
	etcdTLS := ""
	if f := c.EtcdTLS; f != nil {
		etcdTLS = fmt.Sprintf("\n  protocol: https\n  cacert: %s\n  cert: %s\n  key: %s", f.CA, f.Cert, f.Key)
	}
	tlsYAML, serverTLS := "", "server_tls_sslmode: disable\n"
	if c.opts.TLS {
		if err := c.issueProxy(px); err != nil {
			return nil, err
		}
		tlsYAML = fmt.Sprintf("tls: {cert: %s, key: %s}\nclient_tls_sslmode: require\nrestapi: {cafile: %s, certfile: %s, keyfile: %s}\n",
			px.Cert, px.Key, px.CA, px.Cert, px.Key)
		serverTLS = fmt.Sprintf("server_tls_sslmode: verify-full\nserver_tls_ca_file: %s\n", px.CA)
	}
	cfg := fmt.Sprintf(`scope: %s
etcd3:
  hosts: %s%s
listen:
  read_write: %s
  read_only: %s
  http: %s
member_refresh: 1s
%s`, c.opts.Scope, strings.Join(c.Etcd.Endpoints(), ","), etcdTLS, px.RW, px.RO, px.HTTP, tlsYAML)
	if !hasKey(extra, "auth") {
		cfg += fmt.Sprintf("auth:\n  type: scram-sha-256\n  file: %s\n", users)
	}
	if !hasKey(extra, "server_tls_sslmode") {
		cfg += serverTLS
	}
	cfg += extra
	if !strings.Contains(extra, "query_wait_timeout") {
		cfg += "query_wait_timeout: 90s\n"
	}
	if err := os.WriteFile(px.ConfigPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(px.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(c.opts.Binary, "proxy", "-c", px.ConfigPath) // #nosec G204 -- the pgvigil binary the harness was given
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = logf.Close() // the start error is the one to report
		return nil, fmt.Errorf("while starting the proxy: %w", err)
	}
	px.cmd, px.done = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); _ = logf.Close(); close(px.done) }()
	if !Wait(ctx, 90*time.Second, 100*time.Millisecond, func() bool {
		st, err := px.Status(ctx)
		return err == nil && st.Primary != nil
	}) {
		px.Stop()
		b, _ := os.ReadFile(px.LogPath)
		return nil, fmt.Errorf("the proxy routes to no primary after 90s; its log:\n%s", b)
	}
	return px, nil
}

// ProxyStatus is GET /status of the proxy.
type ProxyStatus struct {
	Paused     bool `json:"paused"`
	Switchover bool `json:"switchover_in_progress"`
	Primary    *struct {
		Member string `json:"member"`
		Addr   string `json:"addr"`
	} `json:"primary"`
	Replicas []struct {
		Member string `json:"member"`
		Addr   string `json:"addr"`
	} `json:"replicas"`
}

// Status asks the proxy's HTTP port.
func (px *PGProxy) Status(ctx context.Context) (*ProxyStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+px.HTTP+"/status", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var st ProxyStatus
	return &st, json.NewDecoder(resp.Body).Decode(&st)
}

// PID is the proxy's process id.
func (px *PGProxy) PID() int { return px.cmd.Process.Pid }

// DSN is a libpq connection string through the read-write (ro false) or read-only listener,
// with the superuser's password.
func (px *PGProxy) DSN(ro bool) string {
	host, port, _ := strings.Cut(px.RW, ":")
	if ro {
		host, port, _ = strings.Cut(px.RO, ":")
	}
	return fmt.Sprintf("host=%s port=%s user=%s password=%s dbname=postgres %s connect_timeout=5", host, port, Superuser, SuperPass, px.sslmode())
}

// Conninfo is DSN without the password (for PGPASSWORD or a password file) and without
// connect_timeout: what the demo prints for people to paste.
func (px *PGProxy) Conninfo(ro bool) string {
	host, port, _ := strings.Cut(px.RW, ":")
	if ro {
		host, port, _ = strings.Cut(px.RO, ":")
	}
	return fmt.Sprintf("host=%s port=%s user=%s dbname=postgres %s", host, port, Superuser, px.sslmode())
}

// sslmode is what a client should ask for: verify-full against the cluster CA under TLS.
func (px *PGProxy) sslmode() string {
	if px.CA != "" {
		return "sslmode=verify-full sslrootcert=" + px.CA
	}
	return "sslmode=disable"
}

// issueProxy writes the proxy's certificate (SANs 127.0.0.1 and localhost; server usage for
// its clients, client usage for the REST APIs) and the superuser's password file into px.Dir.
func (c *Cluster) issueProxy(px *PGProxy) error {
	cert, key, err := c.CA.IssueFor("proxy", []string{"127.0.0.1", "localhost"}, certs.Usage{Server: true, Client: true}, certValidity)
	if err != nil {
		return err
	}
	if px.Cert, px.Key, err = certs.WriteIssued(px.Dir, "proxy", cert, key, true); err != nil {
		return err
	}
	px.CA, px.PassFile = c.CAFile, filepath.Join(px.Dir, "superuser.password")
	return os.WriteFile(px.PassFile, []byte(SuperPass+"\n"), 0o600)
}

// Stop ends the proxy (SIGTERM, then SIGKILL after 10 s).
func (px *PGProxy) Stop() {
	if px.cmd == nil || px.cmd.Process == nil {
		return
	}
	_ = px.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-px.done:
	case <-time.After(10 * time.Second):
		_ = px.cmd.Process.Kill()
		<-px.done
	}
}

// hasKey reports whether the YAML text sets the top-level key.
func hasKey(yaml, key string) bool {
	return strings.HasPrefix(yaml, key+":") || strings.Contains(yaml, "\n"+key+":")
}
