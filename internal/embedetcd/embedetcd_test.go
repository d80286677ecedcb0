package embedetcd

import (
	"context"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

func TestStartServesAndCloses(t *testing.T) {
	s, err := Start(t.TempDir())
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer s.Close()
	eps := s.Endpoints()
	if len(eps) != 1 || strings.Contains(eps[0], "://") || s.ClientURL() != "http://"+eps[0] {
		t.Fatalf("endpoints %v, client URL %q", eps, s.ClientURL())
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{s.ClientURL()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatalf("put: %v", err)
	}
	resp, err := cli.Get(ctx, "k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("get = %v, %v", resp, err)
	}
}
