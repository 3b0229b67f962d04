// The sidecar's HTTP interface: /metrics, /healthz, /readyz, /v1/nodes and the sessions API
// (PUT/GET/DELETE /v1/sessions/:id) for nodes that do not talk to Redis themselves.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { timingSafeEqual, createHash } from "node:crypto";
import type { Logger } from "pino";
import {
  cookieValueFor,
  isValidSessionId,
  sessionJson,
  sessionTag,
  type Registry,
  type SessionRecord,
} from "../../lib/registry/index.ts";
import type { SidecarMetrics } from "./metrics.ts";
import type { Mirror } from "./mirror.ts";
import { nodeName } from "../../lib/registry/node-name.ts";
import { statusFile } from "../ui/index.ts";
import { errFields } from "../../lib/errors.ts";

export interface HttpDeps {
  log: Logger;
  metrics: SidecarMetrics;
  registry: Registry;
  mirror: Mirror;
  apiToken: string | null;
  health: () => Record<string, unknown>;
  ready: () => boolean;
  /** Applies a write to the mirror at once (the change echo arrives later). */
  onRegistered: (id: string, record: SessionRecord) => void;
  onClosed: (id: string) => void;
}

const MAX_BODY = 4096;

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = typeof body === "string" ? body : JSON.stringify(body);
  res.writeHead(status, {
    "content-type": typeof body === "string" ? "text/plain; charset=utf-8" : "application/json",
    "cache-control": "no-store",
    ...headers,
  });
  res.end(text);
}

async function readBody(req: IncomingMessage): Promise<string | null> {
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > MAX_BODY) return null;
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks).toString("utf8");
}

const digest = (s: string) => createHash("sha256").update(s).digest();

export function createHttpServer(d: HttpDeps): Server {
  const tokenDigest = d.apiToken ? digest(d.apiToken) : null;
  const authorized = (req: IncomingMessage): boolean => {
    if (!tokenDigest) return true;
    const h = req.headers.authorization ?? "";
    const m = /^Bearer (.+)$/.exec(h);
    // Compare digests: constant time and independent of the presented length.
    return !!m && timingSafeEqual(digest(m[1]), tokenDigest);
  };

  const sessions = async (req: IncomingMessage, res: ServerResponse, rawId: string): Promise<number> => {
    let id: string;
    try {
      id = decodeURIComponent(rawId);
    } catch {
      id = "";
    }
    if (!isValidSessionId(id)) {
      send(res, 400, { error: "invalid session id" });
      return 400;
    }
    const tag = sessionTag(id);
    try {
      if (req.method === "PUT") {
        const text = await readBody(req);
        if (text === null) {
          send(res, 413, { error: "body too large" });
          return 413;
        }
        // eslint-disable-next-line @typescript-eslint/no-explicit-any -- parsed JSON, checked field by field below
        let body: any;
        try {
          body = JSON.parse(text);
        } catch {
          body = null;
        }
        let nodeUrl: URL | null = null;
        try {
          nodeUrl = typeof body?.node === "string" ? new URL(body.node) : null;
        } catch {
          nodeUrl = null;
        }
        if (!nodeUrl || (nodeUrl.protocol !== "http:" && nodeUrl.protocol !== "https:")) {
          send(res, 400, {
            error: 'body must be {"node":"<server URL as configured in Traefik>","boot":"<boot id, optional>"}',
          });
          return 400;
        }
        if (
          body.boot !== undefined &&
          body.boot !== null &&
          (typeof body.boot !== "string" || body.boot.length > 256)
        ) {
          send(res, 400, { error: "boot must be a string of at most 256 characters" });
          return 400;
        }
        const record: SessionRecord = {
          node: body.node,
          cookie: cookieValueFor(body.node),
          boot: body.boot || null,
          created: Date.now(),
          source: "node",
        };
        await d.registry.registerSession(id, record);
        d.onRegistered(id, record);
        d.log.debug({ session: tag, cookie: record.cookie }, "session registered through the API");
        send(res, 200, { cookie: record.cookie });
        return 200;
      }
      if (req.method === "GET") {
        const r = await d.registry.lookupSession(id);
        if (!r) {
          send(res, 404, { error: "session not found" });
          return 404;
        }
        send(res, 200, sessionJson(r));
        return 200;
      }
      if (req.method === "DELETE") {
        const existed = await d.registry.closeSession(id);
        d.onClosed(id);
        d.log.debug({ session: tag, existed }, "session closed through the API");
        send(res, 200, { closed: existed });
        return 200;
      }
      send(res, 405, { error: "method not allowed" }, { allow: "GET, PUT, DELETE" });
      return 405;
    } catch (err) {
      if (errFields(err).code === "ERR_REGISTRY_SCHEMA") {
        send(res, 502, { error: "the registry holds an unreadable record for this session" });
        return 502;
      }
      const e = errFields(err);
      d.log.warn({ session: tag, err: e }, "sessions API: registry unavailable");
      send(
        res,
        503,
        { error: "registry unavailable", code: e.code ?? "ERR_REGISTRY_UNAVAILABLE" },
        { "retry-after": "1" },
      );
      return 503;
    }
  };

  return createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    // HEAD answers like GET without a body (node's server leaves the body out).
    const read = req.method === "GET" || req.method === "HEAD";
    (async () => {
      if ((path === "/metrics" || statusFile(path)) && !read) {
        send(res, 405, { error: "method not allowed" }, { allow: "GET, HEAD" });
        return;
      }
      if (path === "/metrics") {
        const body = await d.metrics.registry.metrics();
        res.writeHead(200, { "content-type": d.metrics.registry.contentType });
        res.end(body);
        return;
      }
      const page = statusFile(path);
      if (page) {
        res.writeHead(200, page.headers);
        res.end(page.body);
        return;
      }
      if (path === "/healthz") {
        send(res, 200, { status: "ok", ...d.health() });
        return;
      }
      if (path === "/readyz") {
        const ok = d.ready();
        send(res, ok ? 200 : 503, { ready: ok, ...d.health() });
        return;
      }
      if (path.startsWith("/v1/")) {
        if (!authorized(req)) {
          d.metrics.apiRequests.inc({ method: req.method ?? "", status: "401" });
          send(res, 401, { error: "bearer token required" }, { "www-authenticate": 'Bearer realm="mcp-affinity"' });
          return;
        }
        const m = /^\/v1\/sessions\/([^/]+)$/.exec(path);
        if (m) {
          const status = await sessions(req, res, m[1]);
          d.metrics.apiRequests.inc({ method: req.method ?? "", status: String(status) });
          return;
        }
        if (path === "/v1/nodes" && req.method === "GET") {
          const live = d.mirror.liveSessionsByNode();
          const nodes = [...d.mirror.nodes()].map((n) => ({
            url: n.url,
            cookie: n.cookie,
            name: nodeName(n),
            state: n.state,
            boot: n.hb?.boot ?? null,
            traefik: n.traefik,
            sessions: live.get(n.cookie) ?? 0,
          }));
          send(res, 200, { nodes });
          return;
        }
      }
      send(res, 404, { error: "not found" });
    })().catch((err) => {
      d.log.error({ err: errFields(err) }, "http handler failed");
      if (!res.headersSent) send(res, 500, { error: "internal error" });
      else res.destroy();
    });
  });
}
