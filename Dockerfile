# syntax=docker/dockerfile:1
#
# The agent registry image: `agent-registry` (the server, the entrypoint) and
# `registryctl` (the CLI), on distroless, as user 65532, no shell.
#
#   docker build -t agent-registry:0.1.0 .
#   docker run --rm -p 50051:50051 -p 9090:9090 -p 8080:8080 agent-registry:0.1.0 --store memory
#
# Deployment manifests: k8s/ (see k8s/README.md).

ARG RUST_VERSION=1.95

# --- build -------------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src

# jemalloc (the server's allocator, statically linked) is built from its C
# sources with make, which the slim image lacks; gcc it has.
RUN apt-get update \
 && apt-get install -y --no-install-recommends make \
 && rm -rf /var/lib/apt/lists/*

# 1. Dependencies only, cached until Cargo.toml, Cargo.lock, build.rs or a
#    .proto file changes: build the manifest against stub sources. build.rs
#    compiles proto/ and the legacy contract in tests/proto/ (protoc comes
#    vendored from crates.io: nothing to install).
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto/ proto/
COPY tests/proto/ tests/proto/
RUN mkdir -p src/bin/registryctl benches \
 && echo '//! stub' > src/lib.rs \
 && printf '//! stub\nfn main() {}\n' > src/main.rs \
 && printf '//! stub\nfn main() {}\n' > src/bin/registryctl/main.rs \
 && printf '//! stub\nfn main() {}\n' > benches/registry.rs \
 && cargo build --release --locked --bin agent-registry --bin registryctl \
 && rm -rf src benches \
    target/release/.fingerprint/agent-registry-* \
    target/release/agent-registry target/release/registryctl

# 2. The real sources. The stub's fingerprints are gone, so the crate is
#    rebuilt whatever the copied files' timestamps; dependencies are not.
COPY . .
RUN cargo build --release --locked --bin agent-registry --bin registryctl \
 && ./target/release/agent-registry --version \
 && ./target/release/registryctl --help > /dev/null

# --- run ---------------------------------------------------------------------
# glibc and libgcc of Debian 12 (as the builder), CA certificates for
# rediss://, no shell, user "nonroot" = 65532.
FROM gcr.io/distroless/cc-debian12:nonroot

LABEL org.opencontainers.image.title="agent-registry" \
      org.opencontainers.image.description="Agent registry: register, heartbeat, discover, watch and notify agents over gRPC" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=build /src/target/release/agent-registry /src/target/release/registryctl /usr/local/bin/

# Settings: every flag also reads an environment variable (README,
# "Configuration"); the image only makes logs JSON by default.
ENV LOG_FORMAT=json

# gRPC, then HTTP /metrics, /healthz, /readyz.
EXPOSE 50051 9090 8080
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/agent-registry"]
