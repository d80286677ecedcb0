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
)

// PGProxy is a `pgvigil proxy` process in front of the cluster.
type PGProxy struct {
	RW, RO, HTTP string // host:port of the read-write, read-only and HTTP listeners
	Dir          string
	ConfigPath   string
	LogPath      string
	cmd          *exec.Cmd
	done         chan struct{}
}

// StartProxy writes an auth file (the superuser with its password) and a proxy.yaml in dir,
// with extra YAML appended (keys given there must not repeat the generated ones, except auth
// and server_tls_sslmode, which replace the generated ones), starts the proxy and waits until
// it routes to a primary.
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
	cfg := fmt.Sprintf(`scope: %s
etcd3:
  hosts: %s%s
listen:
  read_write: %s
  read_only: %s
  http: %s
member_refresh: 1s
`, c.opts.Scope, strings.Join(c.Etcd.Endpoints(), ","), etcdTLS, px.RW, px.RO, px.HTTP)
	if !hasKey(extra, "auth") {
		cfg += fmt.Sprintf("auth:\n  type: scram-sha-256\n  file: %s\n", users)
	}
	if !hasKey(extra, "server_tls_sslmode") {
		cfg += "server_tls_sslmode: disable\n"
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

// DSN is a libpq connection string through the read-write (ro false) or read-only listener.
func (px *PGProxy) DSN(ro bool) string {
	addr := px.RW
	if ro {
		addr = px.RO
	}
	host, port, _ := strings.Cut(addr, ":")
	return fmt.Sprintf("host=%s port=%s user=%s password=%s dbname=postgres sslmode=disable connect_timeout=5", host, port, Superuser, SuperPass)
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
