// Helpers for the plugin's unit tests and bench: a temp shared directory, views published through
// lib/view (the one Node module that owns the formats), a plugin pool on the fake http-wasm host,
// and MCP-shaped requests and upstream responses.
import { mkdtempSync, readdirSync, readFileSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { cookieValueFor } from "../../lib/registry/schema.ts";
import { sessionHashHex } from "../../lib/registry/session-hash.ts";
import {
  decodeLearned,
  parseEventBatch,
  sessionHash,
  viewPaths,
  writeMeta,
  type EventBatch,
  type NodeViewState,
  type ShardBits,
  type ViewMeta,
  type ViewBoot,
} from "../../lib/view/index.ts";
import { publishView } from "./view-writers.ts";
import {
  HostPool,
  OffsetClock,
  type Exchange,
  type HostOptions,
  type HostRequestInit,
  type NextHandler,
  type UpstreamResponse,
} from "../host/http-wasm-host.ts";

const root = join(fileURLToPath(new URL(".", import.meta.url)), "..", "..");
export const PLUGIN_WASM = join(root, "plugin", "build", "plugin.wasm");
export const PASSTHROUGH_WASM = join(root, "plugin", "build", "passthrough.wasm");
/** The plugin's default viewDir: the guest path the tests mount the temp dir at. */
export const GUEST_VIEW_DIR = "/var/run/mcp-affinity";

let pluginModule: WebAssembly.Module | undefined;
let passthroughModule: WebAssembly.Module | undefined;
export function pluginWasm(): WebAssembly.Module {
  if (!existsSync(PLUGIN_WASM)) throw new Error(`${PLUGIN_WASM} is missing: run \`npm run build\``);
  return (pluginModule ??= new WebAssembly.Module(readFileSync(PLUGIN_WASM)));
}
export function passthroughWasm(): WebAssembly.Module {
  if (!existsSync(PASSTHROUGH_WASM)) throw new Error(`${PASSTHROUGH_WASM} is missing: run \`npm run build\``);
  return (passthroughModule ??= new WebAssembly.Module(readFileSync(PASSTHROUGH_WASM)));
}

// ---------------------------------------------------------------- shared directory and views

export interface TempDir {
  dir: string;
  cleanup(): void;
}
export function makeViewDir(prefix = "mcpa-plugin-"): TempDir {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Three nodes of a test cluster: sticky cookie values as Traefik computes them. */
export const NODE_URLS = {
  a: "http://10.0.0.1:3000",
  b: "http://10.0.0.2:3000",
  c: "http://10.0.0.3:3000",
  d: "http://10.0.0.4:3000",
} as const;
export const COOKIE = {
  a: cookieValueFor(NODE_URLS.a),
  b: cookieValueFor(NODE_URLS.b),
  c: cookieValueFor(NODE_URLS.c),
  d: cookieValueFor(NODE_URLS.d),
} as const;

export interface TestNode {
  id: number;
  cookie: string;
  state: NodeViewState;
  retryAfterSeconds?: number;
}
export interface TestSession {
  id: string;
  node: number;
  closed?: boolean;
}
export interface ViewSpec {
  epoch?: number;
  generation?: number;
  /** ms since epoch; defaults to now. */
  published?: number;
  shardBits?: ShardBits;
  nodes: TestNode[];
  sessions: TestSession[];
  /** Node incarnations for routing tokens (`boot` lines). */
  boots?: ViewBoot[];
}
export const EPOCH = 777;

export function metaOf(spec: ViewSpec): ViewMeta {
  return {
    epoch: spec.epoch ?? EPOCH,
    generation: spec.generation ?? 1,
    published: spec.published ?? Date.now(),
    shardBits: spec.shardBits ?? 12,
    nodes: spec.nodes.map((n) => ({
      id: n.id,
      cookie: n.cookie,
      state: n.state,
      retryAfterSeconds: n.retryAfterSeconds ?? 0,
    })),
    boots: spec.boots ?? [],
  };
}
export async function publish(dir: string, spec: ViewSpec): Promise<ViewMeta> {
  const meta = metaOf(spec);
  await publishView(
    dir,
    meta,
    spec.sessions.map((s) => ({ hash: sessionHash(s.id), node: s.node, closed: s.closed ?? false })),
  );
  return meta;
}
/** Rewrites only the meta (a freshness stamp or a node state change). */
export async function republishMeta(dir: string, spec: ViewSpec): Promise<void> {
  await writeMeta(dir, metaOf(spec));
}

/** A node that is gone in the test views (no test node URL maps to it). */
export const GONE_COOKIE = cookieValueFor("http://10.0.0.5:3000");
/** A cluster with a node in every state, and a session on each (plus a closed one). */
export const CLUSTER_VIEW: ViewSpec = {
  nodes: [
    { id: 1, cookie: COOKIE.a, state: "up" },
    { id: 2, cookie: COOKIE.b, state: "draining" },
    { id: 3, cookie: COOKIE.c, state: "down" },
    { id: 4, cookie: COOKIE.d, state: "down", retryAfterSeconds: 42 },
    { id: 5, cookie: GONE_COOKIE, state: "gone" },
  ],
  sessions: [
    { id: "s-up", node: 1 },
    { id: "s-drain", node: 2 },
    { id: "s-down", node: 3 },
    { id: "s-down-hint", node: 4 },
    { id: "s-gone", node: 5 },
    { id: "s-closed", node: 1, closed: true },
  ],
};

/** `_mcp_backend=<value>` as a Cookie pair. */
export const bk = (value: string): string => `_mcp_backend=${value}`;

/** learned/ by session hash: hash -> the cookie line (`<cookie>\n`); every file must be well formed and named by its hash's prefix. */
export function learnedFiles(dir: string): Map<string, string> {
  const p = viewPaths(dir).learned;
  const out = new Map<string, string>();
  if (!existsSync(p)) return out;
  for (const n of readdirSync(p)) {
    const text = readFileSync(join(p, n), "latin1");
    const e = decodeLearned(text);
    if (!e || !e.hashHex.startsWith(n)) throw new Error(`learned/${n} is malformed: ${JSON.stringify(text)}`);
    out.set(e.hashHex, e.cookie + "\n");
  }
  return out;
}
/** Names in learned/ (hash prefixes). */
export function learnedNames(dir: string): string[] {
  const p = viewPaths(dir).learned;
  return existsSync(p) ? readdirSync(p).sort() : [];
}
export function eventFileNames(dir: string): string[] {
  const p = viewPaths(dir).events;
  return existsSync(p) ? readdirSync(p).sort() : [];
}
/** Every event batch in events/ (strictly parsed: a malformed file fails the test). */
export function readEvents(dir: string): { files: string[]; batches: EventBatch[]; all: EventBatch } {
  const files = eventFileNames(dir);
  const batches = files.map((f) => parseEventBatch(readFileSync(join(viewPaths(dir).events, f), "latin1")));
  const all: EventBatch = { t: 0, learned: [], closed: [], decisions: {}, dropped: 0, bodies: {} };
  for (const b of batches) {
    all.learned.push(...b.learned);
    all.closed.push(...b.closed);
    if (b.suspects) (all.suspects ??= []).push(...b.suspects);
    if (b.active) (all.active ??= []).push(...b.active);
    for (const [k, v] of Object.entries(b.decisions)) all.decisions[k] = (all.decisions[k] ?? 0) + v;
    all.dropped += b.dropped;
    for (const [k, v] of Object.entries(b.bodies ?? {})) all.bodies![k] = (all.bodies![k] ?? 0) + v;
    if (b.exposedServerIds) all.exposedServerIds = (all.exposedServerIds ?? 0) + b.exposedServerIds;
  }
  return { files, batches, all };
}
export function clearEvents(dir: string): void {
  rmSync(viewPaths(dir).events, { recursive: true, force: true });
}

// ---------------------------------------------------------------- the plugin on the fake host

export interface PluginOptions {
  dir?: string;
  /** Plugin settings (viewDir defaults to the mounted GUEST_VIEW_DIR); `undefined` values dropped. */
  config?: Record<string, unknown> | string;
  instances?: number;
  clock?: OffsetClock;
  wasm?: WebAssembly.Module;
  host?: Partial<HostOptions>;
}
export interface PluginHandle {
  pool: HostPool;
  clock: OffsetClock;
  handle(init: HostRequestInit, next?: NextHandler, instance?: number): Exchange;
}
export function newPlugin(opts: PluginOptions = {}): PluginHandle {
  const clock = opts.clock ?? new OffsetClock();
  const config =
    typeof opts.config === "string"
      ? opts.config
      : Object.fromEntries(Object.entries(opts.config ?? {}).filter(([, v]) => v !== undefined));
  const pool = new HostPool(
    {
      wasm: opts.wasm ?? pluginWasm(),
      config,
      mounts: opts.dir ? { [GUEST_VIEW_DIR]: opts.dir } : {},
      clock,
      ...opts.host,
    },
    opts.instances ?? 1,
  );
  return { pool, clock, handle: (init, next, instance) => pool.handle(init, next, instance) };
}

// ---------------------------------------------------------------- MCP-shaped requests

export const INIT_BODY = JSON.stringify({
  jsonrpc: "2.0",
  id: 1,
  method: "initialize",
  params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "t", version: "1" } },
});
export const TOOLS_LIST_BODY = JSON.stringify({ jsonrpc: "2.0", id: 2, method: "tools/list", params: {} });

export interface McpReq {
  sessionId?: string | string[];
  cookie?: string | string[];
  body?: string;
  headers?: [string, string][];
  method?: string;
}
export function mcp(r: McpReq = {}): HostRequestInit {
  const method = r.method ?? "POST";
  const headers: [string, string][] = [["Accept", "application/json, text/event-stream"]];
  if (method === "POST") headers.push(["Content-Type", "application/json"]);
  for (const id of r.sessionId === undefined ? [] : Array.isArray(r.sessionId) ? r.sessionId : [r.sessionId])
    headers.push(["Mcp-Session-Id", id]);
  for (const c of r.cookie === undefined ? [] : Array.isArray(r.cookie) ? r.cookie : [r.cookie])
    headers.push(["Cookie", c]);
  if (r.headers) headers.push(...r.headers);
  return {
    method,
    uri: "/mcp",
    host: "edge.test",
    headers,
    body: method === "POST" ? (r.body ?? TOOLS_LIST_BODY) : undefined,
  };
}

/** An upstream (Traefik's balancer + the node) answering an initialize with a new session. */
export function initializeUpstream(
  sessionId: string,
  opts: { setCookie?: string | null; status?: number; contentType?: string } = {},
): NextHandler {
  return () => {
    const headers: [string, string][] = [
      ["Content-Type", opts.contentType ?? "application/json"],
      ["Mcp-Session-Id", sessionId],
    ];
    if (opts.setCookie !== null)
      headers.unshift([
        "Set-Cookie",
        opts.setCookie ?? `_mcp_backend=${COOKIE.a}; Path=/; HttpOnly; Secure; SameSite=Strict`,
      ]);
    return {
      status: opts.status ?? 200,
      headers,
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 1,
        result: { protocolVersion: "2025-06-18", capabilities: {}, serverInfo: { name: "n", version: "1" } },
      }),
    };
  };
}
/** A node answering a request of its session; like the SDK servers, it echoes Mcp-Session-Id. */
export const okUpstream: NextHandler = (req): UpstreamResponse => {
  const sid = req.headers.get("Mcp-Session-Id");
  return {
    status: 200,
    headers:
      sid === undefined
        ? [["Content-Type", "application/json"]]
        : [
            ["Content-Type", "application/json"],
            ["Mcp-Session-Id", sid],
          ],
    body: '{"jsonrpc":"2.0","id":2,"result":{"tools":[]}}',
  };
};
/** The owner's answer for a session it does not hold (restarted, expired): the spec's 404. */
export const sessionNotFoundUpstream: NextHandler = (): UpstreamResponse => ({
  status: 404,
  headers: [["Content-Type", "application/json"]],
  body: '{"jsonrpc":"2.0","error":{"code":-32001,"message":"Session not found"},"id":null}',
});

/** The `_mcp_backend` values in the Cookie lines the upstream received, in order. */
export function forwardedBackends(ex: Exchange, cookieName = "_mcp_backend"): string[] {
  const out: string[] = [];
  for (const line of ex.forwarded?.cookies ?? [])
    for (const part of line.split(";")) {
      const eq = part.indexOf("=");
      if (eq > 0 && part.slice(0, eq).trim() === cookieName) out.push(part.slice(eq + 1).trim());
    }
  return out;
}

export { sessionHashHex, cookieValueFor };
