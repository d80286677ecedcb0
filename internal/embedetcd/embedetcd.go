// Package embedetcd runs a single-member etcd server in-process, for tests and the demo.
package embedetcd

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// readyTimeout bounds how long Start waits for the member to elect itself and serve.
const readyTimeout = 30 * time.Second

// Server is a running embedded etcd.
type Server struct {
	dir                  string
	clientPort, peerPort int
	tls                  *TLSFiles // nil: plain http on the client port

	mu       sync.Mutex
	etcd     *embed.Etcd // nil while stopped
	logLevel zap.AtomicLevel
}

// TLSFiles configures TLS on the client port.
type TLSFiles struct {
	CertFile, KeyFile string // the server's certificate (for 127.0.0.1) and key
	CAFile            string // CAs client certificates are checked against
	ClientCertAuth    bool   // require a client certificate signed by CAFile
}

// Start launches etcd with its data in dir on free loopback ports and waits until it serves.
func Start(dir string) (*Server, error) {
	return startRetry(dir, nil)
}

// StartTLS is Start with TLS on the client port (the peer port stays plain: single member).
// clientCertAuth makes etcd refuse clients without a certificate signed by caFile.
func StartTLS(dir, certFile, keyFile, caFile string, clientCertAuth bool) (*Server, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("embedded etcd with TLS needs a certificate and a key")
	}
	if clientCertAuth && caFile == "" {
		return nil, errors.New("embedded etcd with client certificate authentication needs a CA file")
	}
	return startRetry(dir, &TLSFiles{CertFile: certFile, KeyFile: keyFile, CAFile: caFile, ClientCertAuth: clientCertAuth})
}

func startRetry(dir string, tf *TLSFiles) (*Server, error) {
	var err error
	// The ports are picked by closing a probe listener, so another process can grab one
	// before etcd binds it; a couple of retries make that race harmless. Only a failed bind
	// is retried: it happens before etcd writes anything into dir.
	for range 3 {
		var s *Server
		s, err = start(dir, tf)
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) {
			return s, err
		}
	}
	return nil, err
}

func start(dir string, tf *TLSFiles) (*Server, error) {
	clientPort, err := freePort()
	if err != nil {
		return nil, err
	}
	peerPort, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir, clientPort: clientPort, peerPort: peerPort, tls: tf}
	if err := s.run(); err != nil {
		return nil, err
	}
	return s, nil
}

// Restart starts a stopped server again on the same ports and data (a store outage ending).
func (s *Server) Restart() error {
	s.Close()
	return s.run()
}

// run starts etcd on the server's ports and data directory and waits until it serves.
func (s *Server) run() error {
	dir, peerPort := s.dir, s.peerPort
	cu := s.clientURL()
	pu := loopbackURL(peerPort)

	cfg := embed.NewConfig()
	cfg.Name = "embedded"
	cfg.Dir = dir
	// Only errors are logged, and none during Close, which reports every closed listener as one.
	level := zap.NewAtomicLevelAt(zap.ErrorLevel)
	zc := zap.NewProductionConfig()
	zc.Level = level
	lg, err := zc.Build()
	if err != nil {
		return fmt.Errorf("while building the embedded etcd logger: %w", err)
	}
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg)
	cfg.ListenClientUrls = []url.URL{cu}
	cfg.AdvertiseClientUrls = []url.URL{cu}
	cfg.ListenPeerUrls = []url.URL{pu}
	cfg.AdvertisePeerUrls = []url.URL{pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	if tf := s.tls; tf != nil {
		cfg.ClientTLSInfo = transport.TLSInfo{
			CertFile: tf.CertFile, KeyFile: tf.KeyFile,
			TrustedCAFile: tf.CAFile, ClientCertAuth: tf.ClientCertAuth,
		}
	}

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("while starting embedded etcd in %s: %w", dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
		s.mu.Lock()
		s.etcd, s.logLevel = e, level
		s.mu.Unlock()
		return nil
	case err := <-e.Err():
		level.SetLevel(zap.FatalLevel)
		e.Close()
		return fmt.Errorf("while waiting for embedded etcd to become ready: %w", err)
	case <-time.After(readyTimeout):
		level.SetLevel(zap.FatalLevel)
		e.Close()
		return errors.New("while waiting for embedded etcd to become ready: timed out")
	}
}

// Endpoints returns the client address without a scheme, as dcs/etcd configuration takes it
// (with TLS, dcs/etcd adds https:// when its Config.TLS is set).
func (s *Server) Endpoints() []string {
	return []string{net.JoinHostPort("127.0.0.1", strconv.Itoa(s.clientPort))}
}

// ClientURL returns the client URL with its scheme, for clients that require one.
func (s *Server) ClientURL() string {
	u := s.clientURL()
	return u.String()
}

func (s *Server) clientURL() url.URL {
	u := loopbackURL(s.clientPort)
	if s.tls != nil {
		u.Scheme = "https"
	}
	return u
}

// Close stops the server and waits for it to release its ports and data directory. Idempotent.
func (s *Server) Close() {
	s.mu.Lock()
	e := s.etcd
	s.etcd = nil
	s.mu.Unlock()
	if e != nil {
		s.logLevel.SetLevel(zap.FatalLevel)
		e.Close()
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("while asking the OS for a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func loopbackURL(port int) url.URL {
	return url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
}
