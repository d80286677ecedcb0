# pgvigil — the two set-up commands are `make demo` and `make test` (see README.md).
GO       ?= go
BIN      := bin/pgvigil
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -X github.com/pgvigil/pgvigil/internal/version.Version=$(VERSION) -X github.com/pgvigil/pgvigil/internal/version.Commit=$(COMMIT)
# Packages with no I/O: run under the race detector.
PURE     := ./internal/ha/... ./internal/pgconf/... ./internal/cluster/... ./internal/config/... ./internal/redact/... ./internal/schedule/...
# Fast tests without PostgreSQL or etcd (they use httptest, fakes of pure data, generated certificates).
FAST     := $(PURE) ./cmd/pgvigil/ ./internal/api/... ./internal/metrics/... ./internal/cli/... ./internal/certs/... ./test/chaos/ ./internal/backup/... ./internal/proxy/... ./internal/agent/...

.PHONY: all deps build demo test test-unit test-e2e fuzz-smoke smoke vet chaos chaos-build chaos-smoke chaos-loops bench bench-failover bench-api bench-switchover clean sec demo-tls bench-tls bench-backup bench-proxy test-deploy

all: build

deps:
	@scripts/deps.sh

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/pgvigil

demo: deps build
	$(BIN) demo --nodes 3

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }

test-unit:
	$(GO) test -race -count=1 $(FAST)

# A short run of the fuzz targets; the seed corpus in internal/api/testdata runs in test-unit too.
fuzz-smoke:
	$(GO) test -run='^$$' -fuzz='^FuzzRequest$$' -fuzztime=10s ./internal/api/
	$(GO) test -run='^$$' -fuzz='^FuzzParseBytes$$' -fuzztime=5s ./internal/api/
	$(GO) test -run='^$$' -fuzz='^FuzzMessageReader$$' -fuzztime=5s ./internal/proxy/
	$(GO) test -run='^$$' -fuzz='^FuzzRewrite$$' -fuzztime=5s ./internal/proxy/

test-e2e: deps
	$(GO) test -count=1 -timeout 15m ./internal/dcs/... ./internal/embedetcd/... ./internal/postgres/... ./test/...

test: deps vet sec test-unit fuzz-smoke test-e2e

# The fault-injection suite (test/chaos, as root): hosts in network namespaces, a real 3-member etcd,
# 13 nemeses, checkers for lost writes and split brains, a report with a timeline per run in
# chaos-report/. CHAOS_FLAGS adds flags, e.g. CHAOS_FLAGS="--mode async --seed 42".
CHAOS_BIN := bin/chaos
chaos-build: build
	@command -v iptables >/dev/null 2>&1 || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y iptables; }
	$(GO) build -o $(CHAOS_BIN) ./test/chaos
	$(GO) build -o bin/chaos-etcdmember ./test/chaos/etcdmember
	$(GO) build -tags chaos_unsafe -ldflags "$(LDFLAGS)" -o bin/pgvigil-unsafe ./cmd/pgvigil

chaos: deps chaos-build
	$(CHAOS_BIN) --runs 30 --mode sync --report chaos-report $(CHAOS_FLAGS)

# About three minutes, for CI: three nemeses, then the self-test against the unsafe build
# (fencing disabled), which passes only if the checkers catch the split brain.
chaos-smoke: deps chaos-build
	$(CHAOS_BIN) --runs 3 --nemesis kill-host,partition-all,pause-agent --report chaos-report/smoke $(CHAOS_FLAGS)
	$(CHAOS_BIN) --self-test --binary bin/pgvigil-unsafe --report chaos-report/self-test

# Long failure loops on one machine without namespaces (10 SIGKILLs in synchronous mode, 5 in
# quorum mode, 5 kills of the primary's agent alone).
chaos-loops: deps
	PGVIGIL_CHAOS=1 $(GO) test -count=1 -timeout 60m -run 'TestChaos' -v ./test/e2e/

bench: bench-failover

# A short run of every benchmark, for CI: they must work; their figures are printed, not judged.
smoke: deps build
	$(BIN) bench failover --runs 1
	$(BIN) bench switchover --runs 2
	$(BIN) bench api --requests 300
	$(BIN) bench tls --connects 20
	$(BIN) bench backup --scale 5 --runs 1
	$(BIN) bench proxy --duration 3s --idle-clients 200

bench-failover: deps build
	$(BIN) bench failover --runs 3

bench-api: deps build
	$(BIN) bench api --requests 2000

bench-switchover: deps build
	$(BIN) bench switchover --runs 5

# pgvigil's backup, restore and incremental backup against pgBackRest 2.45 on a ~1 GB pgbench database.
bench-backup: deps build
	$(BIN) bench backup --scale 70 --runs 3

# pgbench select-only and TPC-B-like, 50 clients: direct, PgBouncer (transaction mode) and pgvigil proxy.
bench-proxy: deps build
	$(BIN) bench proxy --duration 20s --clients 50

# Deployment files: systemd units (systemd-analyze verify) and the three-host example configurations.
test-deploy: deps
	$(GO) test -count=1 -run 'TestSystemdUnits|TestDeployExampleConfigs' -v ./test/e2e/

clean:
	rm -rf bin

# Security lint. gosec's version is pinned to one whose go.mod builds with our Go 1.26; it is
# installed into GOPATH/bin when missing. Every finding is fixed or carries a
# "#nosec Gxxx -- reason" comment where it occurs, so this runs clean. test/ is left out: the
# fault-injection harness is not shipped, runs as root on a developer's or CI machine, and
# spawns ip, iptables and mount with arguments of its own by design.
GOSEC_VERSION := v2.22.11
GOSEC         := $(shell $(GO) env GOPATH)/bin/gosec
sec:
	@test -x $(GOSEC) || $(GO) install github.com/securego/gosec/v2/cmd/gosec@$(GOSEC_VERSION)
	$(GOSEC) -quiet -exclude-dir=test ./...

# The demo with TLS on every link and generated certificates.
demo-tls: deps build
	$(BIN) demo --nodes 3 --tls

# What TLS everywhere costs: a plain and a TLS cluster, same figures, ratio.
bench-tls: deps build
	$(BIN) bench tls --connects 500
