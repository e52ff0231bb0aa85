#!/usr/bin/env bash
# test.sh — runs every test of the workspace against the real dependencies:
# starts them with scripts/dev-deps.sh (idempotent; a few seconds when already up), validates the
# deployment files (scripts/validate-deploy.sh), then runs cargo nextest over all targets. Extra
# arguments go to nextest, e.g. scripts/test.sh -E "package(aloft-bus)"
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$root"
dir=$(realpath -m "${DEV_DEPS_DIR:-$root/.dev-deps}")
scripts/dev-deps.sh "$dir" >/dev/null
export ALOFT_DEV_DEPS_ENV=$dir/env   # libs/testkit reads the settings from there
# docker-compose.yml and every Kubernetes manifest against their schemas (a few seconds; the
# validators are installed into the tools cache on first use).
scripts/validate-deploy.sh
exec cargo nextest run --workspace --all-targets --no-fail-fast "$@"
