#!/usr/bin/env bash
# bench.sh — the workload benchmark (issue 10): W1/W2/W3 with raw and flytekit tasks, embedded and
# as separate services, against the lower bounds and the peers, written to docs/benchmarks.md.
#   1. starts the dependencies (scripts/dev-deps.sh; installs what is missing),
#   2. builds the release binaries (aloft and the five services),
#   3. installs the peers' venvs if missing (bench/peers/setup.sh; skip with ALOFT_BENCH_PEERS=0),
#   4. runs bench/workloads.py with the flytekit venv's Python (about 10 minutes).
# Extra arguments go to bench/workloads.py, e.g. scripts/bench.sh --modes embedded --repeat 3
# (see `--help`). Numbers on a loaded machine are worth little: the report prints the load.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$root"
dir=$(realpath -m "${DEV_DEPS_DIR:-$root/.dev-deps}")
scripts/dev-deps.sh "$dir" >/dev/null
# shellcheck disable=SC1091
source "$dir/env"
cargo build --release --bins -p aloft -p aloft-metadata -p aloft-scheduler -p aloft-executor \
  -p aloft-notifier -p aloft-lineage
peers=()
if [ "${ALOFT_BENCH_PEERS:-1}" != 0 ]; then
  # prints name=venv per peer
  while IFS== read -r name venv; do
    peers+=("$name=$venv/bin/python:bench/peers/${name}_bench.py")
  done < <(bash bench/peers/setup.sh)
fi
# `aloft up` starts the env's ALOFT_NATS_SERVER; pyflyte comes from the venv
export PATH=$ALOFT_PYTHON_VENV/bin:$PATH
exec "$ALOFT_PYTHON_VENV/bin/python" bench/workloads.py --venv "$ALOFT_PYTHON_VENV" \
  --peers "$(IFS=,; echo "${peers[*]}")" --command "scripts/bench.sh${*:+ $*}" "$@"
