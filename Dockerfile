# syntax=docker/dockerfile:1
#
# Container images for Hallmark and for the Kubernetes demo:
#
#   docker build -t hallmark:0.1.0 .                                  # the service
#       (add --build-arg HALLMARK_GIT_COMMIT=$(git rev-parse --short HEAD)
#       to name the commit in `hallmark --version`)
#   docker build -t hallmark-demo-model:0.1.0 --target demo-model .   # the demo's model container
#
# The service image holds the release binary (built as the release build
# is, with `cargo build --release --locked --bin hallmark`) and the SoftHSM2
# library, so that the demo in deploy/kubernetes/examples/softhsm-demo can
# create a token inside the pod. In production Hallmark loads the PKCS#11
# module of a real HSM instead: build an image FROM this one that adds the
# vendor's library, or mount it, and set hsm.module.
#
# NOTE: no Docker engine runs on the development and CI machines, so this
# file has not been built there, and the base image tags below were not
# pulled. scripts/check-deploy.sh checks its stages and COPY sources only.

# The toolchain that CI builds with; Cargo.toml's rust-version is the oldest
# that works.
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# The builder and the runtime use the same Debian release, so that the
# binary links against the runtime's glibc.
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
WORKDIR /src
# The build context has no .git, so `hallmark --version` shows commit
# "unknown" unless the commit is passed in:
#   docker build --build-arg HALLMARK_GIT_COMMIT=$(git rev-parse --short HEAD) .
ARG HALLMARK_GIT_COMMIT=
# build.rs compiles proto/ with a vendored protoc, so no system protobuf
# compiler is needed.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY src src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin hallmark \
    && install -D -m 0755 target/release/hallmark /out/hallmark

# The demo's model container: Python with the client package from
# clients/python. Its program comes from a ConfigMap at run time
# (deploy/kubernetes/base/model_service.py).
FROM python:3.12-slim-${DEBIAN_RELEASE} AS demo-model
COPY clients/python /tmp/hallmark-client
RUN pip install --no-cache-dir /tmp/hallmark-client \
    && rm -rf /tmp/hallmark-client
# The user ID that the demo's [[callers]] entry allows to sign.
RUN groupadd --gid 10002 model \
    && useradd --uid 10002 --gid 10002 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin model
USER 10002:10002
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
CMD ["python", "-c", "import hallmark_client; print(hallmark_client.__version__)"]

# The service. The last stage, so that a plain `docker build` makes it.
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# softhsm2 provides /usr/lib/softhsm/libsofthsm2.so and softhsm2-util for
# the demo token; ca-certificates lets `hallmark verify` fetch key sets over
# HTTPS.
RUN apt-get update \
    && apt-get install -y --no-install-recommends softhsm2 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 10001 hallmark \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin hallmark
COPY --from=builder /out/hallmark /usr/local/bin/hallmark
# Numeric, so that the kubelet can check runAsNonRoot without /etc/passwd.
USER 10001:10001
# 9464: GET /metrics and the JWKS. 8081: gRPC health, when
# server.health_listen is set. The gRPC API itself is usually a Unix socket.
EXPOSE 9464 8081
ENTRYPOINT ["/usr/local/bin/hallmark"]
CMD ["serve", "--config", "/etc/hallmark/hallmark.toml"]
