"""Validates the deployment files (run by scripts/validate-deploy.sh inside its pinned venv).

- docker-compose.yml against the Compose specification's JSON schema (check-jsonschema's vendored
  `compose-spec.json`);
- every overlay under deploy/k8s/overlays rendered with `kubectl kustomize`, each object against
  the Kubernetes OpenAPI schemas of KUBERNETES_VERSION in strict mode (unknown fields are errors),
  KEDA objects against KEDA's CRD schemas (npm @kubernetes-models/keda, generated from them);
  an object of a kind neither knows fails, so nothing goes unchecked silently;
- the Grafana dashboards parse as JSON and the Prometheus/Grafana provisioning files as YAML.

Exits 1 with every problem listed.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S_VERSION = os.environ.get("KUBERNETES_VERSION", "1.32.0")
KEDA_VALIDATOR = ROOT / "scripts" / "validate_keda.mjs"


def compose(problems):
    out = subprocess.run(
        ["check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(ROOT / "docker-compose.yml")],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        problems.append(f"docker-compose.yml does not match the compose specification:\n{out.stdout}{out.stderr}")
    else:
        print("docker-compose.yml: valid against the compose specification")


def keda(objects, problems, where):
    if not objects:
        return
    out = subprocess.run(
        ["node", str(KEDA_VALIDATOR)], input=json.dumps(objects), capture_output=True, text=True
    )
    if out.returncode != 0:
        problems.append(f"{where}: KEDA objects invalid:\n{out.stdout}{out.stderr}")
    else:
        print(out.stdout.strip())


def overlays(problems):
    for overlay in sorted((ROOT / "deploy" / "k8s" / "overlays").iterdir()):
        if not (overlay / "kustomization.yaml").is_file():
            continue
        where = f"overlays/{overlay.name}"
        rendered = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True)
        if rendered.returncode != 0:
            problems.append(f"{where}: kubectl kustomize failed:\n{rendered.stderr}")
            continue
        docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
        keda_objects = []
        for doc in docs:
            name = f"{where}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            if doc.get("apiVersion", "").startswith("keda.sh/"):
                keda_objects.append(doc)
                continue
            try:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as e:
                problems.append(f"{name}: {e.message} at {'/'.join(str(p) for p in e.path)}")
            except kubernetes_validate.SchemaNotFoundError as e:
                problems.append(f"{name}: no schema to check it against ({e})")
        print(f"{where}: {len(docs) - len(keda_objects)} objects checked against Kubernetes {K8S_VERSION} (strict)")
        keda(keda_objects, problems, where)


def observability(problems):
    for path in sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json")):
        try:
            dash = json.loads(path.read_text())
            if not dash.get("panels"):
                problems.append(f"{path.relative_to(ROOT)}: no panels")
        except json.JSONDecodeError as e:
            problems.append(f"{path.relative_to(ROOT)}: {e}")
    for path in sorted((ROOT / "deploy").rglob("*.yml")):
        try:
            yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            problems.append(f"{path.relative_to(ROOT)}: {e}")
    print("grafana dashboards and provisioning files parse")


def main():
    problems = []
    compose(problems)
    overlays(problems)
    observability(problems)
    for p in problems:
        print(f"INVALID {p}", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
