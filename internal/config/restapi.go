package config

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"
)

// verify_client values, as Patroni spells them.
const (
	VerifyClientNone     = "none"
	VerifyClientOptional = "optional"
	VerifyClientRequired = "required"
)

// restAPIDefaults pins the TLS file paths (the agent may change directory) and spells out the
// default verify_client.
func (r *RestAPI) restAPIDefaults() {
	r.CertFile = absPath(r.CertFile)
	r.KeyFile = absPath(r.KeyFile)
	r.CAFile = absPath(r.CAFile)
	if r.VerifyClient == "" {
		r.VerifyClient = VerifyClientNone
	}
}

// restAPIProblems checks the access-control keys of the restapi section without touching the
// system; CheckRestAPIFiles reads the files.
func (r *RestAPI) restAPIProblems(add func(key, format string, args ...any)) {
	switch {
	case r.Auth.Username != "" && r.Auth.Password == "":
		add("restapi.authentication.password", "required when restapi.authentication.username is set")
	case r.Auth.Username == "" && r.Auth.Password != "":
		add("restapi.authentication.username", "required when restapi.authentication.password is set")
	}

	if r.KeyFilePassword != "" {
		add("restapi.keyfile_password", "encrypted private keys are not supported; decrypt the key "+
			"(e.g. openssl pkey -in key.pem -out plain.pem), point restapi.keyfile at it and remove this setting")
	}
	if r.KeyFile != "" && r.CertFile == "" {
		add("restapi.certfile", "required when restapi.keyfile is set")
	}

	switch r.VerifyClient {
	case "", VerifyClientNone:
	case VerifyClientOptional, VerifyClientRequired:
		if r.CertFile == "" {
			add("restapi.verify_client", "%s needs TLS: set restapi.certfile and restapi.keyfile", r.VerifyClient)
		}
		if r.CAFile == "" {
			add("restapi.cafile", "required when restapi.verify_client is %s (the CAs client certificates are checked against)", r.VerifyClient)
		}
	default:
		add("restapi.verify_client", "must be none, optional or required, got %q", r.VerifyClient)
	}

	for i, e := range r.Allowlist {
		if err := checkAllowlistEntry(e); err != nil {
			add(fmt.Sprintf("restapi.allowlist[%d]", i), "%v", err)
		}
	}
}

// checkAllowlistEntry accepts what Patroni's allowlist does: an IP address, a network in CIDR
// form, or a host name.
func checkAllowlistEntry(e string) error {
	if e == "" {
		return fmt.Errorf("must not be empty")
	}
	if strings.Contains(e, "/") {
		if _, err := netip.ParsePrefix(e); err != nil {
			return fmt.Errorf("%q is not a network in CIDR form (e.g. 10.0.0.0/24)", e)
		}
		return nil
	}
	if _, err := netip.ParseAddr(e); err == nil || hostnameRE.MatchString(e) {
		return nil
	}
	return fmt.Errorf("%q is not an IP address, a CIDR network or a host name", e)
}

// CheckRestAPIFiles reads the TLS files of the restapi section: the certificate and key must
// load as a pair and the CA file must hold certificates. Parse runs it; Decode does not.
func (c *Config) CheckRestAPIFiles() []error {
	r := &c.RestAPI
	return checkTLSFiles(tlsFileKeys{"restapi.certfile", "restapi.keyfile", "restapi.cafile"}, r.CertFile, r.KeyFile, r.CAFile)
}

// tlsFileKeys are the dotted keys that name a certificate, its key and a CA file, for errors.
type tlsFileKeys struct{ cert, key, ca string }

// checkTLSFiles reads a certificate with its key (keyFile empty: certFile holds the key too, as
// Patroni allows) and a CA file; empty names are left out. The pair must load and not have
// expired, the CA file must hold PEM certificates; every error names the key to fix.
func checkTLSFiles(keys tlsFileKeys, certFile, keyFile, caFile string) []error {
	var errs []error
	add := func(key, format string, args ...any) {
		errs = append(errs, &FieldError{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	if certFile != "" {
		cert, certErr := os.ReadFile(certFile) // #nosec G304 -- certificate file named by the operator's configuration
		if certErr != nil {
			add(keys.cert, "cannot read: %v", certErr)
		}
		key, keyErr, keyPath := cert, certErr, certFile
		if keyFile != "" {
			keyPath = keyFile
			key, keyErr = os.ReadFile(keyFile) // #nosec G304 -- key file named by the operator's configuration
			if keyErr != nil {
				add(keys.key, "cannot read: %v", keyErr)
			}
		}
		if certErr == nil && keyErr == nil {
			if _, err := tls.X509KeyPair(cert, key); err != nil {
				switch {
				case keyFile == "" && !hasPrivateKey(key):
					add(keys.key, "required: %s (%s) holds no private key", keys.cert, certFile)
				case isEncryptedKey(key):
					add(keys.key, "%s holds an encrypted private key, which pgvigil cannot use; decrypt it "+
						"(e.g. openssl pkey -in key.pem -out plain.pem)", keyPath)
				default:
					add(keys.cert, "certificate %s and key %s do not load as a pair: %v", certFile, keyPath, err)
				}
			} else if err := CheckNotExpired(certFile, time.Now()); err != nil {
				add(keys.cert, "%v", err)
			}
		}
	}
	if caFile != "" {
		pemCA, err := os.ReadFile(caFile) // #nosec G304 -- CA file named by the operator's configuration
		if err != nil {
			add(keys.ca, "cannot read: %v", err)
		} else if !x509.NewCertPool().AppendCertsFromPEM(pemCA) {
			add(keys.ca, "%s holds no PEM certificates", caFile)
		}
	}
	return errs
}

func hasPrivateKey(data []byte) bool {
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			return false
		}
		if strings.HasSuffix(b.Type, "PRIVATE KEY") {
			return true
		}
	}
}

func isEncryptedKey(data []byte) bool {
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			return false
		}
		if b.Type == "ENCRYPTED PRIVATE KEY" ||
			(strings.HasSuffix(b.Type, "PRIVATE KEY") && strings.Contains(b.Headers["Proc-Type"], "ENCRYPTED")) {
			return true
		}
	}
}
