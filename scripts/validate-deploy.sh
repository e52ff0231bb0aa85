#!/usr/bin/env bash
# validate-deploy.sh — checks docker-compose.yml against the Compose specification and every
# object the kustomize overlays render against the Kubernetes schemas (KEDA's against its CRDs);
# see scripts/validate_deploy.py. The validators are pinned and installed on first use into
# DEV_DEPS_TOOLS (default ~/.cache/aloft/dev-deps, shared with scripts/dev-deps.sh), never into
# the repository:
#   * PyPI check-jsonschema (ships the compose-spec JSON schema) and kubernetes-validate (the
#     Kubernetes OpenAPI schemas), in their own venv;
#   * npm @kubernetes-models/keda (KEDA's CRD schemas, compiled).
# Needs kubectl (kustomize) and node. Run by scripts/test.sh, so CI covers it.
#
# usage: scripts/validate-deploy.sh        env: KUBERNETES_VERSION (default 1.32.0)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
TOOLS=$(realpath -m "${DEV_DEPS_TOOLS:-$HOME/.cache/aloft/dev-deps}")

CHECK_JSONSCHEMA_VERSION=0.39.0
KUBERNETES_VALIDATE_VERSION=1.37.0
KEDA_MODELS_VERSION=2.0.0

VENV=$TOOLS/venv-deploy-validate-$CHECK_JSONSCHEMA_VERSION-$KUBERNETES_VALIDATE_VERSION
KEDA_DIR=$TOOLS/keda-models-$KEDA_MODELS_VERSION

log() { printf '[validate-deploy] %s\n' "$*" >&2; }

for tool in kubectl node npm python3; do
  command -v "$tool" >/dev/null || { log "ERROR: $tool is not installed"; exit 1; }
done

if ! "$VENV/bin/python" -c 'import kubernetes_validate, check_jsonschema' 2>/dev/null; then
  log "installing check-jsonschema $CHECK_JSONSCHEMA_VERSION and kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
    "check-jsonschema==$CHECK_JSONSCHEMA_VERSION" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi

if [ ! -f "$KEDA_DIR/node_modules/@kubernetes-models/keda/package.json" ]; then
  log "installing @kubernetes-models/keda@$KEDA_MODELS_VERSION into $KEDA_DIR"
  rm -rf "$KEDA_DIR"
  mkdir -p "$KEDA_DIR"
  npm install --prefix "$KEDA_DIR" --no-audit --no-fund --silent "@kubernetes-models/keda@$KEDA_MODELS_VERSION" >&2
fi

export KEDA_MODELS_DIR=$KEDA_DIR
PATH="$VENV/bin:$PATH" exec "$VENV/bin/python" "$ROOT/scripts/validate_deploy.py"
