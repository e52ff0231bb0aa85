# syntax=docker/dockerfile:1.7
#
# Aloft container images, all built from the Cargo workspace by one builder stage.
#
#   docker build --target service      -t aloft-service:dev .        # every Aloft binary
#   docker build --target task-runtime -t aloft-task-runtime:dev .   # aloft-executor + flytekit
#
# `service` has no ENTRYPOINT on purpose: docker-compose.yml and deploy/k8s choose the binary with
# `command` (aloft-metadata, aloft-scheduler, aloft-notifier, aloft-lineage, aloft). The executor
# runs flytekit tasks as child processes in its own container, so it gets `task-runtime`: Python
# 3.11 with flytekit, `tar` (code bundles) and tini (reaps the tasks' orphaned processes).
#
# Needs BuildKit (the default builder since Docker 23) for the cache mounts.

ARG RUST_IMAGE=rust:1.95-bookworm
ARG SERVICE_BASE=debian:bookworm-slim
ARG TASK_BASE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------- builder
FROM ${RUST_IMAGE} AS builder

# python3 and pip: scripts/fetch-flyteidl.sh runs `python3 -m pip download` to fetch the
# hash-pinned flyteidl wheel (docs/adr/0002). Debian packages follow the pinned base image's
# release (security updates included), so they are not pinned one by one.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-pip \
 && rm -rf /var/lib/apt/lists/*

ENV CARGO_TERM_COLOR=never \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1
WORKDIR /src

# 1. The flyteidl schema that libs/proto's build script compiles. This layer depends only on the
#    fetch script and its pins, so editing Rust sources never downloads it again.
COPY scripts/fetch-flyteidl.sh scripts/
COPY proto/flyteidl/fetch.py proto/flyteidl/
RUN scripts/fetch-flyteidl.sh

# 2. The workspace (.dockerignore keeps target/, .git/, .dev-deps/ and the host's schema out).
#    The cargo registry and the target directory are BuildKit cache mounts, so a source edit
#    recompiles only the crates it touches. A cache mount is not part of the image, hence the
#    binaries are copied out in the same step.
COPY . .

# Binaries the images carry. aloft-X is built from services/X, `aloft` from services/aloft. A
# binary whose crate does not exist yet is skipped with a warning; one whose crate exists but was
# not built (not a workspace member?) fails the build.
ARG ALOFT_BINARIES="aloft aloft-metadata aloft-scheduler aloft-executor aloft-notifier aloft-lineage"
RUN --mount=type=cache,id=aloft-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=aloft-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=aloft-target,target=/src/target,sharing=locked \
    set -eu; \
    cargo build --release --locked --bins; \
    mkdir -p /out/bin /out/executor; \
    for bin in $ALOFT_BINARIES; do \
      crate="services/${bin#aloft-}"; \
      if [ -x "target/release/$bin" ]; then \
        install -m 0755 "target/release/$bin" /out/bin/; \
      elif [ -f "$crate/Cargo.toml" ]; then \
        echo "error: $crate exists but cargo built no $bin (is it a workspace member?)" >&2; exit 1; \
      else \
        echo "warning: $bin is not in this image: $crate does not exist yet" >&2; \
      fi; \
    done; \
    if [ -x /out/bin/aloft-executor ]; then cp /out/bin/aloft-executor /out/executor/; fi; \
    ls -l /out/bin /out/executor; \
    [ -n "$(ls -A /out/bin)" ] || { echo "error: no Aloft binary was built" >&2; exit 1; }

# ---------------------------------------------------------------------------------------- service
FROM ${SERVICE_BASE} AS service

# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 aloft \
 && useradd --system --uid 10001 --gid aloft --home-dir /var/lib/aloft --create-home \
      --shell /usr/sbin/nologin aloft

COPY --from=builder /out/bin/ /usr/local/bin/

# A numeric user lets Kubernetes verify runAsNonRoot. /var/lib/aloft is the home and working
# directory: the embedded defaults (SQLite file, local blob store /var/lib/aloft/data) land there.
USER 10001:10001
WORKDIR /var/lib/aloft
# 8089 admin gRPC, 8088 signed-URL HTTP (metadata); 8091-8094 health gRPC of scheduler, executor,
# notifier, lineage; 9090 Prometheus /metrics of the bus services.
EXPOSE 8088 8089 8091 8092 8093 8094 9090
CMD ["aloft-metadata", "--help"]

# ----------------------------------------------------------------------------------- task-runtime
FROM ${TASK_BASE} AS task-runtime

ARG FLYTEKIT_VERSION=1.16.31
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tar tini \
 && rm -rf /var/lib/apt/lists/* \
 && pip install --no-cache-dir --disable-pip-version-check "flytekit==${FLYTEKIT_VERSION}" \
 && pyflyte --help >/dev/null \
 && groupadd --system --gid 10001 aloft \
 && useradd --system --uid 10001 --gid aloft --home-dir /home/aloft --create-home \
      --shell /usr/sbin/nologin aloft

# An empty directory when the executor crate does not exist yet (see the builder stage).
COPY --from=builder /out/executor/ /usr/local/bin/

ENV PYTHONUNBUFFERED=1
# Task processes need a writable $HOME and working directory (flyte-contract 5.3).
USER 10001:10001
WORKDIR /home/aloft
EXPOSE 8092 9090
CMD ["tini", "--", "aloft-executor", "--help"]
