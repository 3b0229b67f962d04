// Traefik's static and dynamic configuration for the local stack: the templates in traefik/ (what a
// user copies) loaded as YAML documents, their ${...} placeholders filled, and the stack's changes
// made on the document tree (node list, health-check windows, plugin settings, plugin off).
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parseDocument, visit, type Document } from "yaml";
import { ROOT } from "./paths.ts";
import { StackError } from "./process.ts";

/** Request header the e2e clients set on each request; Traefik's access log keeps it (request_X-E2e-Call). */
export const CALL_ID_HEADER = "X-E2e-Call";

export interface StackPorts {
  redis: number;
  sidecar: number;
  http: number;
  https: number;
  api: number;
  nodes: number[];
}

export interface RenderVars {
  bind: string;
  ports: StackPorts;
  dir: string;
  shared: string;
  certFile: string;
  keyFile: string;
  logLevel: string;
  nodeUrls: string[];
  /** Traefik's JSON access log (default <dir>/logs/access.log). */
  accessLogFile?: string;
  /** The directory Traefik's file provider reads (default <dir>/dynamic): dynamic.yml, and the fast-path file. */
  dynamicDir?: string;
}

/** The directory of a Traefik's dynamic configuration files. */
export const dynamicDirOf = (v: RenderVars) => v.dynamicDir ?? join(v.dir, "dynamic");
/** The fast-path file a sidecar writes for its Traefik (sidecar --fast-path-file). */
export const FAST_PATH_FILE = "mcp-fast-path.yml";

export interface StaticOptions {
  /** false: no access log (the benchmarks: it would cost one side more than the other). Default true. */
  accessLog?: boolean;
  /** false: no experimental section, so plain Traefik does not even compile the plugin. Default true. */
  plugin?: boolean;
  /** The debug API (pprof, forced GC for heap figures). Default false. */
  debugApi?: boolean;
}

export interface DynamicOptions {
  /** false: the /mcp router without the middleware (plain Traefik sticky cookie). */
  plugin: boolean;
  /** Plugin settings overriding the template's (string values, as the file provider gives them). */
  pluginSettings?: Record<string, string>;
  healthIntervalMs: number;
  healthTimeoutMs: number;
  /** Appended to the file as a comment: forces a textual change for reload tests. */
  comment?: string;
}

const STATIC_TEMPLATE = join(ROOT, "traefik", "traefik.yml");
const DYNAMIC_TEMPLATE = join(ROOT, "traefik", "dynamic.yml");
const PLUGIN_PATH = ["http", "middlewares", "mcp-affinity", "plugin", "mcp-affinity"];

const msToDuration = (ms: number) => (ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`);

function loadTemplate(file: string): Document {
  const doc = parseDocument(readFileSync(file, "utf8"));
  if (doc.errors.length > 0) throw new StackError(`${file}: ${doc.errors[0]!.message}`, "ERR_STACK_TEMPLATE");
  return doc;
}

/** Replaces every ${NAME} inside the document's string values; a name without a value is an error. */
function fillPlaceholders(doc: Document, file: string, vars: Record<string, string>): void {
  visit(doc, {
    Scalar(_, node) {
      if (typeof node.value !== "string") return;
      node.value = node.value.replace(/\$\{(\w+)\}/g, (_m, k: string) => {
        if (!(k in vars)) throw new StackError(`${file}: no value for \${${k}}`, "ERR_STACK_TEMPLATE");
        return vars[k]!;
      });
    },
  });
}

/** Fails naming the template when the stack's change finds nothing to change. */
function requireIn(doc: Document, file: string, path: string[]): void {
  if (!doc.hasIn(path)) throw new StackError(`${file}: no ${path.join(".")}`, "ERR_STACK_TEMPLATE");
}

export function renderStatic(v: RenderVars, o: StaticOptions = {}): string {
  const doc = loadTemplate(STATIC_TEMPLATE);
  fillPlaceholders(doc, STATIC_TEMPLATE, {
    BIND: v.bind,
    HTTP_PORT: String(v.ports.http),
    HTTPS_PORT: String(v.ports.https),
    API_PORT: String(v.ports.api),
    DYNAMIC_DIR: dynamicDirOf(v),
    LOG_LEVEL: v.logLevel,
    SHARED_DIR: v.shared,
  });
  if (o.plugin === false) {
    requireIn(doc, STATIC_TEMPLATE, ["experimental"]);
    doc.delete("experimental");
  }
  if (o.debugApi) {
    requireIn(doc, STATIC_TEMPLATE, ["api"]);
    doc.setIn(["api", "debug"], true);
  }
  if (o.accessLog !== false) {
    // Which node answered what, and how long it took. One header is kept: the e2e clients' call
    // id, to name the exact request a failure belongs to.
    doc.set("accessLog", {
      filePath: v.accessLogFile ?? join(v.dir, "logs", "access.log"),
      format: "json",
      fields: { headers: { defaultMode: "drop", names: { [CALL_ID_HEADER]: "keep" } } },
    });
  }
  return doc.toString();
}

export function renderDynamic(v: RenderVars, o: DynamicOptions): string {
  const doc = loadTemplate(DYNAMIC_TEMPLATE);
  // Both services list every node (the template shows one ${NODE_URL} entry).
  for (const service of ["mcp", "nodes"]) {
    const path = ["http", "services", service, "loadBalancer", "servers"];
    requireIn(doc, DYNAMIC_TEMPLATE, path);
    doc.setIn(path, doc.createNode(v.nodeUrls.map((url) => ({ url }))));
  }
  fillPlaceholders(doc, DYNAMIC_TEMPLATE, { TLS_CERT: v.certFile, TLS_KEY: v.keyFile });
  if (!o.plugin) {
    requireIn(doc, DYNAMIC_TEMPLATE, ["http", "routers", "mcp", "middlewares"]);
    doc.deleteIn(["http", "routers", "mcp", "middlewares"]);
    // Without the plugin no id is wrapped: the wrapped-session router goes too.
    requireIn(doc, DYNAMIC_TEMPLATE, ["http", "routers", "mcp-wrapped"]);
    doc.deleteIn(["http", "routers", "mcp-wrapped"]);
    // Plain sticky cookies, as a deployment without the plugin runs them: with Traefik's health check.
    doc.setIn(["http", "services", "mcp", "loadBalancer", "healthCheck"], doc.createNode({ path: "/healthz" }));
  }
  // Test-sized windows on every health check; the template keeps values a deployment would use.
  for (const service of ["mcp", "nodes"]) {
    const path = ["http", "services", service, "loadBalancer", "healthCheck"];
    if (!doc.hasIn(path)) continue;
    doc.setIn([...path, "interval"], msToDuration(o.healthIntervalMs));
    doc.setIn([...path, "timeout"], msToDuration(o.healthTimeoutMs));
  }
  requireIn(doc, DYNAMIC_TEMPLATE, PLUGIN_PATH);
  for (const [k, val] of Object.entries(o.pluginSettings ?? {})) doc.setIn([...PLUGIN_PATH, k], val);
  if (o.comment) doc.comment = doc.comment ? `${doc.comment}\n ${o.comment}` : ` ${o.comment}`;
  return doc.toString();
}

/** A self-signed certificate for 127.0.0.1 and localhost (so the Secure cookie works end to end). */
export function makeCertificate(dir: string): { certFile: string; keyFile: string } {
  const certFile = join(dir, "tls-cert.pem");
  const keyFile = join(dir, "tls-key.pem");
  if (existsSync(certFile) && existsSync(keyFile)) return { certFile, keyFile };
  try {
    execFileSync(
      "openssl",
      [
        "req",
        "-x509",
        "-nodes",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-keyout",
        keyFile,
        "-out",
        certFile,
        "-days",
        "30",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
      ],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
  } catch (err) {
    throw new StackError(
      `openssl could not make a TLS certificate: ${(err as { stderr?: Buffer }).stderr?.toString().trim() ?? err}`,
      "ERR_STACK_TLS",
    );
  }
  return { certFile, keyFile };
}
