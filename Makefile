# pgvigil — the two set-up commands are `make demo` and `make test` (see README.md).
GO       ?= go
BIN      := bin/pgvigil
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -X github.com/pgvigil/pgvigil/internal/version.Version=$(VERSION) -X github.com/pgvigil/pgvigil/internal/version.Commit=$(COMMIT)
# Packages with no I/O: run under the race detector.
PURE     := ./internal/ha/... ./internal/pgconf/... ./internal/cluster/... ./internal/config/...

.PHONY: all deps build demo test test-unit test-e2e vet bench bench-failover bench-api clean

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
	$(GO) test -race -count=1 $(PURE)

test-e2e: deps
	$(GO) test -count=1 -timeout 15m ./internal/dcs/... ./internal/embedetcd/... ./internal/postgres/... ./test/...

test: deps vet test-unit test-e2e

bench: bench-failover

bench-failover: deps build
	$(BIN) bench failover --runs 3

bench-api: deps build
	$(BIN) bench api --requests 2000

clean:
	rm -rf bin
