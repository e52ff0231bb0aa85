// Validates KEDA objects (a JSON array on stdin) against KEDA's CRD schemas, as compiled by the npm
// package @kubernetes-models/keda (installed by scripts/validate-deploy.sh into KEDA_MODELS_DIR).
// Before that, a deliberately broken ScaledObject must be refused: a validator that accepts
// everything would make this check pass for nothing.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const dir = process.env.KEDA_MODELS_DIR;
const load = async (kind) =>
  (await import(pathToFileURL(join(dir, "node_modules/@kubernetes-models/keda/keda.sh/v1alpha1", `${kind}.js`))))[kind];
const kinds = {
  ScaledObject: await load("ScaledObject"),
  ScaledJob: await load("ScaledJob"),
  TriggerAuthentication: await load("TriggerAuthentication"),
};

const broken = { apiVersion: "keda.sh/v1alpha1", kind: "ScaledObject", metadata: { name: "x" },
  spec: { scaleTargetRef: { name: "d" }, minReplicaCount: "one", triggers: [] } };
try {
  new kinds.ScaledObject(broken).validate();
  console.error("the KEDA validator accepted a broken ScaledObject");
  process.exit(2);
} catch {}

let failed = 0;
for (const obj of JSON.parse(readFileSync(0, "utf8"))) {
  const name = `${obj.kind}/${obj.metadata?.name}`;
  const Kind = kinds[obj.kind];
  if (!Kind) { console.error(`${name}: no KEDA schema for this kind`); failed++; continue; }
  try { new Kind(obj).validate(); console.log(`${name}: valid against KEDA's CRD schema`); }
  catch (e) { console.error(`${name}: ${e.message}`); failed++; }
}
process.exit(failed ? 1 : 0);
