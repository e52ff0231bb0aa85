#!/usr/bin/env bash
# quickstart.sh — from a fresh clone to a finished ML pipeline on this machine:
#   1. installs what is missing (scripts/dev-deps.sh: nats-server, a Python venv with flytekit and
#      scikit-learn, the flyteidl schema; rustup's minimal Rust toolchain if there is no cargo),
#   2. builds the `aloft` binary (release),
#   3. starts `aloft up` in the background (its own session; log in <data dir>/aloft.log), or
#      reuses one that already answers on the port,
#   4. applies the example's lineage.yaml, runs examples/training with `pyflyte run --remote` and
#      follows it with `aloft executions watch`,
#   5. prints the run's result and where to look next.
# Exit status: 0 when the pipeline succeeded; the watch's status (3 failed, 4 aborted) or 1 otherwise.
#
# usage: scripts/quickstart.sh
# env:   ALOFT_DATA_DIR   data folder of `aloft up` (default <repo>/aloft-data)
#        ALOFT_PORT       admin API and console port (default 30080, where pyflyte looks by default)
set -Eeuo pipefail

T0=$(date +%s)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
DATA=$(realpath -m "${ALOFT_DATA_DIR:-$ROOT/aloft-data}")
PORT=${ALOFT_PORT:-30080}
ENDPOINT=127.0.0.1:$PORT
AUX=$((PORT + 1))   # http; the notifier, lineage and nats ports follow it (see `aloft up` below)
QLOG=$DATA/quickstart.log

step() { printf '\n\033[1m[%3ss] %s\033[0m\n' "$(( $(date +%s) - T0 ))" "$*"; }
die() { printf 'quickstart: %s\n' "$*" >&2; exit 1; }
mkdir -p "$DATA"
: >"$QLOG"

step "1/5 installing what is missing (scripts/dev-deps.sh; details in $QLOG)"
"$ROOT/scripts/dev-deps.sh" >>"$QLOG" 2>&1 || { tail -20 "$QLOG" >&2; die "scripts/dev-deps.sh failed (see $QLOG)"; }
# shellcheck disable=SC1091
source "$ROOT/.dev-deps/env"
if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] || {
    echo "no cargo: installing the minimal Rust toolchain with rustup (https://rustup.rs)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal >>"$QLOG" 2>&1 \
      || die "rustup failed (see $QLOG)"
  }
  export PATH=$HOME/.cargo/bin:$PATH
fi

step "2/5 building aloft (cargo build --release -p aloft; the first build takes a few minutes)"
(cd "$ROOT" && cargo build --release -p aloft 2>&1 | tail -3) || die "cargo build failed"
ALOFT=$ROOT/target/release/aloft
export ALOFT_ENDPOINT=$ENDPOINT ALOFT_NOTIFIER_ENDPOINT=127.0.0.1:$((AUX + 2)) ALOFT_LINEAGE_ENDPOINT=127.0.0.1:$((AUX + 3))

step "3/5 starting aloft up (data in $DATA, log in $DATA/aloft.log)"
if "$ALOFT" projects list >/dev/null 2>&1; then
  echo "an Aloft already answers on $ENDPOINT: using it"
else
  setsid "$ALOFT" up --data-dir "$DATA" --port "$PORT" --http-port "$AUX" --notifier-port $((AUX + 2)) \
    --lineage-port $((AUX + 3)) --nats-port $((AUX + 141)) >"$DATA/aloft.log" 2>&1 </dev/null &
  echo $! >"$DATA/aloft.pid"
  for _ in $(seq 1 120); do
    "$ALOFT" projects list >/dev/null 2>&1 && break
    kill -0 "$(cat "$DATA/aloft.pid")" 2>/dev/null || { tail -20 "$DATA/aloft.log" >&2; die "aloft up exited (see $DATA/aloft.log)"; }
    sleep 0.5
  done
  "$ALOFT" projects list >/dev/null 2>&1 || die "aloft up did not answer on $ENDPOINT within 60 s (see $DATA/aloft.log)"
  echo "aloft up is running (pid $(cat "$DATA/aloft.pid"))"
fi

step "4/5 registering and running examples/training (scikit-learn: load, validate, split, map over C, evaluate, register)"
export PATH=$ALOFT_PYTHON_VENV/bin:$PATH
cd "$ROOT/examples/training"
"$ALOFT" lineage apply lineage.yaml -p flytesnacks || echo "(lineage.yaml not applied; the run goes on)"
out=$(pyflyte --config "$DATA/flytekit.yaml" run --remote -p flytesnacks -d development pipeline.py training 2>&1) \
  || { echo "$out" >&2; die "pyflyte run failed"; }
name=$(sed -n 's#.*/executions/\([a-z0-9]*\).*#\1#p' <<<"$out" | head -1)
[ -n "$name" ] || { echo "$out" >&2; die "pyflyte printed no execution"; }
status=0
"$ALOFT" executions watch "$name" --interval 0.5 || status=$?

step "5/5 result"
"$ALOFT" outputs "$name" || true
cat <<EOF

The pipeline ran as execution $name ($(( $(date +%s) - T0 )) s since the start of this script).
Where to look next:
  console:       http://localhost:$PORT/console/projects/flytesnacks/domains/development/executions/$name
  the tree:      $ALOFT executions show $name
  a task's log:  $ALOFT logs $name n6            (nodes as listed by \`executions show\`)
  inputs:        $ALOFT inputs $name
  lineage:       $ALOFT lineage model breast-cancer-classifier
  all runs:      $ALOFT executions list
  Aloft's log:   $DATA/aloft.log
  stop Aloft:    kill \$(cat $DATA/aloft.pid)    (the data folder is kept for the next \`aloft up\`)
Your own project: $ALOFT init my-model && cd my-model && python -m pytest
EOF
exit $status
