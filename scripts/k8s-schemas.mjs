#!/usr/bin/env node
// Offline JSON schemas for `kubeconform -strict` (no schema is fetched at check time):
//   kubernetes/  the Kubernetes API's strict schemas, taken from the PyPI package kubernetes-validate
//                (it ships them per Kubernetes version, with references into one shared definitions
//                file) and made standalone: each kind's file carries the definitions it reaches.
//   crds/<group>/<kind>_<version>.json  Traefik's CRDs (the openAPIV3Schema of each version, from
//                the pinned Traefik module's CRD definitions), strict: no unknown field accepted.
// Cached in .cache/k8s-schemas/<versions>/ (built in a temporary folder, then renamed into place).
// Prints the folder. Usage as a module: `k8sSchemas()` returns it, building it when missing.
import { execFileSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
export const KUBERNETES_VERSION = "1.34.0";
const KUBERNETES_VALIDATE = "kubernetes-validate==1.37.0";
/** The Traefik release the project pins (scripts/install-traefik.sh is its one home). */
export const TRAEFIK_VERSION = /version=\$\{TRAEFIK_VERSION:-(v[0-9.]+)\}/.exec(
  readFileSync(join(root, "scripts", "install-traefik.sh"), "utf8"),
)[1];
const CRD_FILE = "docs/content/reference/dynamic-configuration/kubernetes-crd-definition-v1.yml";

/** kubeconform's -schema-location templates for the folder `k8sSchemas()` returns. */
export function schemaLocations(dir) {
  return [
    join(dir, "kubernetes", "{{ .ResourceKind }}{{ .KindSuffix }}.json"),
    join(dir, "crds", "{{ .Group }}", "{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"),
  ];
}

export function k8sSchemas() {
  const out = join(root, ".cache", "k8s-schemas", `kubernetes-v${KUBERNETES_VERSION}+traefik-${TRAEFIK_VERSION}`);
  if (existsSync(join(out, "kubernetes")) && existsSync(join(out, "crds"))) return out;
  mkdirSync(dirname(out), { recursive: true });
  const work = mkdtempSync(join(dirname(out), ".build-"));
  try {
    const result = join(work, "result");
    kubernetesSchemas(work, join(result, "kubernetes"));
    traefikCrdSchemas(join(result, "crds"));
    try {
      renameSync(result, out);
    } catch (err) {
      if (!existsSync(out)) throw err; // another working copy finished first
    }
    return out;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

function python() {
  const venv = join(root, ".venv", "bin", "python");
  return existsSync(venv) ? venv : "python3";
}

function kubernetesSchemas(work, dest) {
  console.error(`k8s-schemas: downloading ${KUBERNETES_VALIDATE} (PyPI)`);
  execFileSync(
    python(),
    [
      "-m",
      "pip",
      "download",
      "-q",
      "--disable-pip-version-check",
      "--no-deps",
      "-d",
      join(work, "wheel"),
      KUBERNETES_VALIDATE,
    ],
    { stdio: ["ignore", "ignore", "inherit"] },
  );
  const wheel = readdirSync(join(work, "wheel")).find((f) => f.endsWith(".whl"));
  if (!wheel) throw new Error("k8s-schemas: pip gave no wheel");
  const prefix = `kubernetes_validate/kubernetes-json-schema/v${KUBERNETES_VERSION}-local-strict/`;
  const src = join(work, "src");
  // A wheel is a zip: Python's zipfile extracts the one version we use.
  execFileSync(python(), [
    "-c",
    "import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1])\nz.extractall(sys.argv[3], [n for n in z.namelist() if n.startswith(sys.argv[2])])",
    join(work, "wheel", wheel),
    prefix,
    src,
  ]);
  const dir = join(src, prefix);
  const defs = JSON.parse(readFileSync(join(dir, "_definitions.json"), "utf8")).$defs;
  mkdirSync(dest, { recursive: true });
  let n = 0;
  for (const file of readdirSync(dir)) {
    if (!file.endsWith(".json") || file.startsWith("_") || file === "all.json") continue;
    const schema = JSON.parse(readFileSync(join(dir, file), "utf8"));
    if (!schema["x-kubernetes-group-version-kind"]) continue; // a kind one can apply, not a part of one
    writeFileSync(join(dest, file), JSON.stringify(standalone(schema, defs)));
    n++;
  }
  if (n < 50) throw new Error(`k8s-schemas: only ${n} Kubernetes kinds found in ${KUBERNETES_VALIDATE}`);
}

/** The schema with its references into the shared definitions file pointing at its own $defs. */
function standalone(schema, defs) {
  const EXTERNAL = "/api/_definitions.json#/$defs/";
  const used = new Map();
  const rewrite = (node) => {
    if (Array.isArray(node)) return node.map(rewrite);
    if (node === null || typeof node !== "object") return node;
    const o = {};
    for (const [k, v] of Object.entries(node)) {
      if (k === "$ref" && typeof v === "string" && (v.startsWith(EXTERNAL) || v.startsWith("#/$defs/"))) {
        const name = v.slice(v.indexOf("#/$defs/") + 8);
        if (!used.has(name)) {
          used.set(name, null);
          if (!defs[name]) throw new Error(`k8s-schemas: no definition ${name}`);
          used.set(name, rewrite(defs[name]));
        }
        o[k] = `#/$defs/${name}`;
      } else o[k] = rewrite(v);
    }
    return o;
  };
  const { $id: _id, ...rest } = schema;
  const body = rewrite(rest);
  return { ...body, $defs: Object.fromEntries(used) };
}

function traefikCrdSchemas(dest) {
  const info = JSON.parse(
    execFileSync("go", ["mod", "download", "-json", `github.com/traefik/traefik/v3@${TRAEFIK_VERSION}`], {
      cwd: join(root, ".cache"),
      env: { ...process.env, GOFLAGS: "-mod=mod" },
    }).toString(),
  );
  if (!info.Dir) throw new Error(`k8s-schemas: the Traefik module gave no source directory (${info.Error ?? "?"})`);
  const docs = parseAllDocuments(readFileSync(join(info.Dir, CRD_FILE), "utf8"))
    .map((d) => d.toJS())
    .filter(Boolean);
  let n = 0;
  for (const crd of docs) {
    if (crd.kind !== "CustomResourceDefinition") continue;
    const { group, names } = crd.spec;
    for (const v of crd.spec.versions) {
      const schema = strictCrd(v.schema.openAPIV3Schema);
      schema.$schema = "http://json-schema.org/draft-04/schema#";
      mkdirSync(join(dest, group), { recursive: true });
      writeFileSync(join(dest, group, `${names.kind.toLowerCase()}_${v.name}.json`), JSON.stringify(schema));
      n++;
    }
  }
  if (n < 5) throw new Error(`k8s-schemas: only ${n} Traefik CRD versions found`);
}

/** OpenAPI v3 (structural CRD schema) to JSON schema: no unknown fields, int-or-string, nullable. */
function strictCrd(node) {
  if (Array.isArray(node)) return node.map(strictCrd);
  if (node === null || typeof node !== "object") return node;
  const o = {};
  for (const [k, v] of Object.entries(node)) {
    o[k] = k === "properties" ? Object.fromEntries(Object.entries(v).map(([p, s]) => [p, strictCrd(s)])) : strictCrd(v);
  }
  if (o["x-kubernetes-int-or-string"]) {
    delete o.type;
    o.oneOf = [{ type: "integer" }, { type: "string" }];
  }
  if (o.nullable && typeof o.type === "string") o.type = [o.type, "null"];
  const open = o["x-kubernetes-preserve-unknown-fields"] === true;
  if (o.type === "object" && o.properties && o.additionalProperties === undefined && !open)
    o.additionalProperties = false;
  return o;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) console.log(k8sSchemas());
