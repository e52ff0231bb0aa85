#!/usr/bin/env bash
# Create one venv per peer orchestrator (only if missing) with pinned versions.
# Idempotent: an existing venv whose pinned package is already at the right
# version is left alone. Prints the venv paths on stdout.
set -euo pipefail

LUIGI_VERSION="3.8.1"
DAGSTER_VERSION="1.13.29"

PEERS_DIR="${ALOFT_BENCH_PEERS_DIR:-$HOME/.cache/aloft/bench-peers}"
PYTHON="${ALOFT_BENCH_PYTHON:-python3}"
mkdir -p "$PEERS_DIR"

export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_NO_INPUT=1

# ensure_venv NAME DIST VERSION [EXTRA_SPEC...]
ensure_venv() {
  local name="$1" dist="$2" version="$3"
  shift 3
  local venv="$PEERS_DIR/$name"
  local have=""
  if [ -x "$venv/bin/python" ]; then
    have="$("$venv/bin/python" -c "import importlib.metadata as m; print(m.version('$dist'))" 2>/dev/null || true)"
  fi
  if [ "$have" != "$version" ]; then
    echo "setup: installing $dist==$version into $venv" >&2
    if [ ! -x "$venv/bin/python" ]; then
      "$PYTHON" -m venv "$venv"
    fi
    # One install at a time, no parallel builds; wheels only where possible.
    "$venv/bin/python" -m pip install --quiet --prefer-binary "$dist==$version" "$@" >&2
    "$venv/bin/python" -c "import importlib.metadata as m; v=m.version('$dist'); assert v=='$version', v" \
      || { echo "setup: $dist==$version did not install in $venv" >&2; exit 1; }
  fi
  echo "$name=$venv"
}

ensure_venv luigi luigi "$LUIGI_VERSION"
ensure_venv dagster dagster "$DAGSTER_VERSION"
