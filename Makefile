# Agent registry: the two quick-start commands are `make run` and `make test`.
# Every install step the project needs lives here, so a fresh clone on a clean
# machine (CI included) needs nothing else.

CARGO ?= cargo
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

.PHONY: run test test-web chromium lint k8s-lint fmt deps build bench clean fuzz

# k8s-lint: a local virtualenv holding the Kubernetes JSON schemas (PyPI
# package kubernetes-validate), created on first use.
PYTHON ?= python3
VENV ?= .venv
KUBERNETES_VALIDATE_VERSION ?= 1.37.0
# Oldest supported Kubernetes (preStop sleep needs 1.30) and newest schemas.
KUBE_VERSIONS ?= 1.30 1.37
K8S_VALIDATE_STAMP := $(VENV)/.kubernetes-validate-$(KUBERNETES_VALIDATE_VERSION)
# test-web: schemathesis (property-based pass over the OpenAPI document) and
# Playwright (drives Debian's chromium; its own browser download is never used).
SCHEMATHESIS_VERSION ?= 4.32.5
PLAYWRIGHT_VERSION ?= 1.65.2
WEB_TEST_STAMP := $(VENV)/.web-tests-$(SCHEMATHESIS_VERSION)-$(PLAYWRIGHT_VERSION)
FUZZ_EXAMPLES ?= 100
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
REGISTRY_BIN := $(TARGET_DIR)/debug/agent-registry
# Where the console test leaves its screenshot; CONSOLE_SCREENSHOT=docs/console.png
# refreshes the README's.
CONSOLE_SCREENSHOT ?= $(TARGET_DIR)/console.png

## run: start the server on the embedded memory store (gRPC :50051, metrics :9090,
## HTTP API and console :8080)
run:
	$(CARGO) run --bin agent-registry -- --store memory

## test: unit, behaviour, legacy-client and doc tests (installs redis-server when
## missing), then the HTTP API fuzz pass and the console in Chromium (test-web)
test: deps
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		echo "cargo-nextest not found; using cargo test"; \
		$(CARGO) test --workspace --no-fail-fast; \
	fi
	$(CARGO) test --doc --quiet
	@$(MAKE) --no-print-directory test-web

## test-web: schemathesis over /v1/openapi.json (no 5xx, no crash), then the
## console (/ui/) in headless Chromium (screenshot in $(CONSOLE_SCREENSHOT))
test-web: $(WEB_TEST_STAMP) chromium
	$(CARGO) build --bin agent-registry
	cd tests/web && ../../$(VENV)/bin/python fuzz.py $(abspath $(REGISTRY_BIN)) $(FUZZ_EXAMPLES)
	cd tests/web && ../../$(VENV)/bin/python console.py $(abspath $(REGISTRY_BIN)) $(abspath $(CONSOLE_SCREENSHOT))

$(WEB_TEST_STAMP): $(VENV)/bin/python
	$(VENV)/bin/pip install --quiet --disable-pip-version-check 'schemathesis==$(SCHEMATHESIS_VERSION)' 'playwright==$(PLAYWRIGHT_VERSION)'
	touch $@

## chromium: Debian's chromium for the console test; apt-get when root
chromium:
	@if [ -x /usr/bin/chromium ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "missing: /usr/bin/chromium (the console test drives it headless)." >&2; \
		echo "install it, e.g.: sudo apt-get install chromium" >&2; \
		exit 1; \
	fi

## lint: formatting and clippy, warnings are errors; then the k8s/ manifests
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --all-targets --all-features -- -D warnings
	@$(MAKE) --no-print-directory k8s-lint

## k8s-lint: k8s/ offline against the Kubernetes JSON schemas (strict), plus
## each kustomization rendered and cross-checked when kubectl is on PATH
k8s-lint: $(K8S_VALIDATE_STAMP)
	$(VENV)/bin/python k8s/validate.py --quiet $(addprefix -k ,$(KUBE_VERSIONS)) k8s

$(K8S_VALIDATE_STAMP): $(VENV)/bin/python
	$(VENV)/bin/pip install --quiet --disable-pip-version-check 'kubernetes-validate==$(KUBERNETES_VALIDATE_VERSION)'
	touch $@

# The virtualenv (python3-venv with apt-get when root and missing).
$(VENV)/bin/python:
	@if ! $(PYTHON) -m venv --help >/dev/null 2>&1 || ! $(PYTHON) -c 'import ensurepip' 2>/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing python3-venv with apt-get"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; \
		else \
			echo "missing: python3 venv support (e.g. sudo apt-get install python3-venv)" >&2; exit 1; \
		fi; \
	fi
	$(PYTHON) -m venv $(VENV)

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

## fuzz: each cargo-fuzz target of fuzz/ for FUZZ_SECONDS (nightly; installs
## cargo-fuzz when missing). Not part of `make test`.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= requests credentials
fuzz:
	@if ! rustup toolchain list | grep -q '^nightly'; then \
		echo "installing the nightly toolchain (cargo-fuzz needs it)"; \
		rustup toolchain install nightly --profile minimal; \
	fi
	@if ! $(CARGO) fuzz --version >/dev/null 2>&1; then \
		echo "installing cargo-fuzz"; \
		$(CARGO) install cargo-fuzz --locked; \
	fi
	@for target in $(FUZZ_TARGETS); do \
		echo "fuzzing $$target for $(FUZZ_SECONDS) s"; \
		$(CARGO) +nightly fuzz run --fuzz-dir fuzz $$target -- -max_total_time=$(FUZZ_SECONDS) -max_len=4096 || exit 1; \
	done

## bench: the registry (memory and Redis store) against a ceiling server that
## stores nothing, all release builds on loopback; Markdown tables with the
## ratios and issue 10's goals (a few minutes after the build;
## REGISTRY_BENCH_SCALE=0.05 for a quick try with fewer agents and watchers)
bench: deps
	$(CARGO) bench --bench registry

clean:
	$(CARGO) clean
