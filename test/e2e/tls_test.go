package e2e

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	"github.com/pgvigil/pgvigil/internal/localcluster"
)

// TestEtcdOverTLS runs a cluster whose store only accepts TLS clients with a certificate from
// the cluster's CA: bootstrap, a failover and the operator CLI all go through it.
func TestEtcdOverTLS(t *testing.T) {
	ctx := context.Background()
	c := startClusterOptions(t, localcluster.Options{Nodes: 2, EtcdTLS: true})
	waitFor(t, "all members streaming", bootTimeout, func() bool { return c.Streaming(ctx) })
	p, err := c.Primary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := c.StoreValue(ctx, "leader"); err != nil || v != p.Name {
		t.Fatalf("leader key over TLS = %q (%v), want %s", v, err, p.Name)
	}
	f := c.EtcdTLS
	url := "etcds://" + c.Etcd.Endpoints()[0]
	out, err := exec.Command(binary, "list", "--dcs-url", url, "--scope", localcluster.DefaultScope, "-f", "json",
		"--etcd-cacert", f.CA, "--etcd-cert", f.Cert, "--etcd-key", f.Key).CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"Member": "`+p.Name+`"`) {
		t.Fatalf("list over TLS: %v\n%s", err, out)
	}
	// Without a client certificate the store refuses the CLI.
	if out, err := exec.Command(binary, "list", "--dcs-url", url, "--scope", localcluster.DefaultScope,
		"--etcd-cacert", f.CA).CombinedOutput(); err == nil {
		t.Fatalf("list without a client certificate succeeded:\n%s", out)
	}
	if err := p.Crash(); err != nil {
		t.Fatal(err)
	}
	if err := p.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("crashed primary still answers")
	}
	waitFor(t, "a new primary elected through the TLS store", failoverTimeout, func() bool {
		q, err := c.Primary(ctx)
		return err == nil && q != p
	})
}
