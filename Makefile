# Agent registry: the two quick-start commands are `make run` and `make test`.
# Every install step the project needs lives here, so a fresh clone on a clean
# machine (CI included) needs nothing else.

CARGO ?= cargo
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

.PHONY: run test lint fmt deps build bench clean

## run: start the server on the embedded memory store (gRPC :50051, HTTP :9090)
run:
	$(CARGO) run --bin agent-registry -- --store memory

## test: unit, behaviour, legacy-client and doc tests (installs redis-server when missing)
test: deps
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		echo "cargo-nextest not found; using cargo test"; \
		$(CARGO) test --workspace --no-fail-fast; \
	fi
	$(CARGO) test --doc --quiet

## lint: formatting and clippy, warnings are errors
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --all-targets --all-features -- -D warnings

fmt:
	$(CARGO) fmt --all

build:
	$(CARGO) build --all-targets

## deps: system packages the tests need (redis-server); apt-get when root
deps:
	@if command -v redis-server >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing redis-server with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
		systemctl disable --now redis-server >/dev/null 2>&1 || true; \
	else \
		echo "missing: redis-server (the tests start their own redis-server processes)." >&2; \
		echo "install it, e.g.: sudo apt-get install redis-server" >&2; \
		exit 1; \
	fi

## bench: throughput and p50/p99 of every operation on both stores (release build)
bench: deps
	$(CARGO) bench --bench registry

clean:
	$(CARGO) clean
