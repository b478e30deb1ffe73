# Vigil's make targets. `make run` and `make test` work on a fresh machine: they install
# what they need (Go modules; for tests, Debian packages and the reference Prometheus).
GO ?= go
GOTEST_TIMEOUT ?= 20m
export GOFLAGS ?= -buildvcs=false
export PATH := $(CURDIR)/bin:$(PATH)

.PHONY: run build test test-deps bench lint fmt

build:
	$(GO) build -o bin/vigil ./cmd/vigil

run: build
	./bin/vigil serve

test-deps:
	./scripts/test-deps.sh

test: test-deps build
	$(GO) vet ./...
	@test -z "$$(gofmt -l . | tee /dev/stderr)" || (echo "gofmt: the files above need formatting" && exit 1)
	VIGIL_BIN=$(CURDIR)/bin/vigil PROMTOOL=$(CURDIR)/bin/promtool PROMETHEUS_REF=$(CURDIR)/bin/prometheus \
		$(GO) test -timeout $(GOTEST_TIMEOUT) -p 2 ./...

bench: test-deps build
	$(GO) test -run '^$$' -bench . -benchmem -timeout 60m ./...

lint:
	@test -z "$$(gofmt -l . | tee /dev/stderr)" || (echo "gofmt: the files above need formatting" && exit 1)
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@latest ./...
