package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"time"
)

// CheckEtcdFiles reads the TLS files of the etcd3 section: the client certificate and key must
// load as a pair and cacert must hold certificates. Parse runs it; Decode does not.
func (c *Config) CheckEtcdFiles() []error {
	e := &c.Etcd
	return checkTLSFiles(tlsFileKeys{"etcd3.cert", "etcd3.key", "etcd3.cacert"}, e.Cert, e.Key, e.CACert)
}

// TLSConfig returns the client TLS settings for etcd: nil with protocol http; with https, TLS 1.2
// or later, cacert's CAs (else the system's) and the client certificate if cert is set.
func (e *Etcd) TLSConfig() (*tls.Config, error) {
	if e.Protocol != "https" {
		return nil, nil
	}
	return EtcdClientTLS(e.CACert, e.Cert, e.KeyFile())
}

// EtcdClientTLS builds a client tls.Config for etcd from PEM files; empty names are left out.
func EtcdClientTLS(cafile, certfile, keyfile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cafile != "" {
		b, err := os.ReadFile(cafile) // #nosec G304 -- CA file named by etcd3.cacert or --etcd-cacert
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificates", cafile)
		}
		cfg.RootCAs = pool
	}
	if certfile != "" {
		if keyfile == "" {
			keyfile = certfile
		}
		cert, err := tls.LoadX509KeyPair(certfile, keyfile)
		if err != nil {
			return nil, fmt.Errorf("client certificate %s and key %s: %w", certfile, keyfile, err)
		}
		if err := CheckNotExpired(certfile, time.Now()); err != nil {
			return nil, fmt.Errorf("etcd client %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
