# syntax=docker/dockerfile:1
# One image with both binaries: `iam` runs by default (port 8090); the tenant-manager chart runs
# /usr/local/bin/tenant-manager (port 8091). docs/DEPLOYMENT.md has the usage.
#   docker build -t kaa-iam:0.1.0 .
#   docker run --rm -p 8090:8090 -e APP_CONFIG_PATH=/dev/null kaa-iam:0.1.0   # built-in defaults

FROM rust:1-bookworm AS builder
WORKDIR /src
# The build reads Cargo.*, src/, storage/ (migrations), docs/openapi/ (served document) and
# benches/ (declared in Cargo.toml); .dockerignore keeps target/ and the rest out.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin iam --bin tenant-manager \
    && install -D -m 0755 target/release/iam /out/iam \
    && install -D -m 0755 target/release/tenant-manager /out/tenant-manager

FROM debian:bookworm-slim
# Runtime libraries: OpenSSL 3 (PKCS#12 licenses, PostgreSQL TLS) and the CA bundle.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 kaa \
    && useradd --system --uid 10001 --gid kaa --home-dir /srv --no-create-home \
       --shell /usr/sbin/nologin kaa \
    && mkdir -p /srv/data \
    && chown kaa:kaa /srv/data
COPY --from=builder /out/ /usr/local/bin/
# The documented production configurations; the Helm charts mount their ConfigMap over them.
COPY config/iam/service-config.yml /srv/iam/service-config.yml
COPY config/tenant-manager/service-config.yml /srv/tenant-manager/service-config.yml
# ./data (the embedded SQLite of a run without PostgreSQL) is /srv/data, writable by kaa.
WORKDIR /srv
USER 10001:10001
EXPOSE 8090 8091
ENTRYPOINT ["/usr/local/bin/iam"]
