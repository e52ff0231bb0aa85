#!/usr/bin/env bash
# test.sh — runs every test of the workspace against the real dependencies:
# starts them with scripts/dev-deps.sh (idempotent; a few seconds when already up), validates the
# deployment files (scripts/validate-deploy.sh), runs cargo nextest over all targets, then the
# workload benchmark once at smoke size. Extra arguments go to nextest (and skip the smoke run),
# e.g. scripts/test.sh -E "package(aloft-bus)"
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$root"
dir=$(realpath -m "${DEV_DEPS_DIR:-$root/.dev-deps}")
scripts/dev-deps.sh "$dir" >/dev/null
export ALOFT_DEV_DEPS_ENV=$dir/env   # libs/testkit reads the settings from there
# docker-compose.yml and every Kubernetes manifest against their schemas (a few seconds; the
# validators are installed into the tools cache on first use).
scripts/validate-deploy.sh
cargo nextest run --workspace --all-targets --no-fail-fast "$@"
# The workload benchmark's driver (bench/workloads.py), once through every mode and flavour with W1
# on the debug binaries nextest just built: the one-command benchmark must keep working, and a
# failed run fails here. Skipped when nextest was given a filter (a partial run).
if [ $# -eq 0 ]; then
  # shellcheck disable=SC1091
  source "$dir/env"
  PATH=$ALOFT_PYTHON_VENV/bin:$PATH "$ALOFT_PYTHON_VENV/bin/python" bench/workloads.py --release target/debug \
    --venv "$ALOFT_PYTHON_VENV" --workloads W1 --repeat 1 --no-report --json target/bench/smoke.json >/dev/null
  echo "bench/workloads.py smoke run: ok (target/bench/smoke.json)"
fi
