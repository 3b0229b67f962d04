// The fast path: Traefik routes the requests of tokened sessions itself, without the plugin. The
// sidecar writes a dynamic configuration file (for Traefik's file provider) with routers per live
// node incarnation, matching the routing token at the start of `Mcp-Session-Id`, to a service
// holding only that node. Everything else (initialize, ids without a token, wrapped ids the plugin
// must unwrap, handles, and tokens of incarnations that are down, gone or not known yet) matches no
// router here and reaches the plugin's router below them, which decides as before.
import { dirname } from "node:path";
import type { Logger } from "pino";
import { MINTED_PREFIX, MINTED_RANDOM_LENGTH } from "../../lib/token/index.ts";
import { atomicWrite, defaultViewFs, type ViewFs } from "../../lib/view/index.ts";
import { errFields } from "../../lib/errors.ts";
import type { SidecarMetrics } from "./metrics.ts";

/** A node incarnation the fast path routes to: its sticky cookie value, boot tag and address. */
export interface FastPathTarget {
  cookie: string;
  bootTag: string;
  url: string;
}

export interface FastPathSettings {
  /** The path prefix of the MCP endpoint (the plugin's router matches the same). */
  pathPrefix: string;
  entryPoints: string[];
  /** Middlewares every fast router runs first (the operator's: authentication and the like). */
  middlewares: string[];
  priority: number;
  /**
   * POST bodies declared up to this size are read into memory before they go on; larger ones and
   * bodies without a Content-Length take the plugin's path (0: fast-path bodies stream).
   */
  maxBodyBytes: number;
}

/**
 * A Cookie line of 1,025 characters or more (Go's RE2 repeats at most 1,000 times): such requests go
 * through the plugin, which answers 431 with a JSON-RPC body when the lines are too large to read
 * (4 KiB). Passed to the node, a line past Node.js's 16 KiB header limit comes back from Traefik as a
 * 502 (the node closes the connection while the request is still being written). Characters, not
 * bytes: 1,025 of them cover every line of 4,097 bytes or more.
 */
const LONG_COOKIE = "^(?s:.{1000}.{25})";

/** Service name of an incarnation (one per token: a rebooted node gets new routers and a new service). */
export const fastPathName = (t: Pick<FastPathTarget, "cookie" | "bootTag">) => `mcp-fast-${t.cookie}${t.bootTag}`;
/** The service names this file defines start with this (what the request counts are read by). */
export const FAST_PATH_SERVICE_PREFIX = "mcp-fast-";
/**
 * The service in front of an incarnation's service that reads POST bodies into memory. Outside the
 * counted prefix: Traefik records requests only at the load balancer behind it, so each is counted once.
 */
export const fastPathBodyName = (t: Pick<FastPathTarget, "cookie" | "bootTag">) => `mcp-body-${t.cookie}${t.bootTag}`;
/** Where a body service would send a request its node answered with a status it must not see: nowhere (503). */
export const FAST_PATH_NOWHERE = "mcp-body-nowhere";

/**
 * A pattern (RE2 and JavaScript alike) matching the decimal numbers 0 to `n`: any with fewer digits
 * than `n`, and those with as many that are not above it (leading zeros included: still not above
 * it). A longer string matches nothing, whatever its value: such a request takes the plugin's path.
 */
export function decimalAtMost(n: number): string {
  const d = String(n);
  const alternatives = d.length > 1 ? [`[0-9]{1,${d.length - 1}}`] : [];
  for (let i = 0; i < d.length; i++) {
    const digit = Number(d[i]);
    if (digit === 0) continue;
    const rest = d.length - i - 1;
    alternatives.push(`${d.slice(0, i)}${digit === 1 ? "0" : `[0-${digit - 1}]`}${rest ? `[0-9]{${rest}}` : ""}`);
  }
  alternatives.push(d);
  return `^(?:${alternatives.join("|")})$`;
}

/**
 * The dynamic configuration, as text (JSON, which Traefik's YAML reader takes). Per live
 * incarnation: a POST router whose body goes through a body service (read into memory first, the
 * cut answers of golang/go#40747 avoided as the plugin avoids them), a router for every other
 * method (GET streams, DELETE: no body, so nothing is held for a stream's life), and a service with
 * only its node. `retired` incarnations keep their service, without routers, so Traefik keeps their
 * request counts (it deletes a service's series once the service leaves its configuration). Sorted:
 * the same input always gives the same bytes, and an unchanged table never makes Traefik reload.
 */
export function renderFastPath(live: FastPathTarget[], s: FastPathSettings, retired: FastPathTarget[] = []): string {
  const byName = (a: FastPathTarget, b: FastPathTarget) => fastPathName(a).localeCompare(fastPathName(b));
  const routers: Record<string, unknown> = {};
  const services: Record<string, unknown> = {};
  const buffered = s.maxBodyBytes > 0;
  // A POST the fast path takes declares a body within the bound; a larger one, or one without a
  // Content-Length (chunked), goes through the plugin, which reads it or counts it as streamed.
  const postRule = buffered ? ` && HeaderRegexp(\`Content-Length\`, \`${decimalAtMost(s.maxBodyBytes)}\`)` : "";
  if (live.length && buffered) services[FAST_PATH_NOWHERE] = { loadBalancer: { servers: [] } };
  for (const t of [...live].sort(byName)) {
    const name = fastPathName(t);
    // A whole minted id of this incarnation (the token is hex only: nothing to escape). Anything
    // else, a longer or malformed id included, gets the plugin's answer (400 for a bad id).
    const id = `^${MINTED_PREFIX.replace(".", "\\.")}${t.cookie}${t.bootTag}\\.[A-Za-z0-9_-]{${MINTED_RANDOM_LENGTH}}$`;
    const match =
      `PathPrefix(\`${s.pathPrefix}\`) && HeaderRegexp(\`Mcp-Session-Id\`, \`${id}\`)` +
      ` && !HeaderRegexp(\`Cookie\`, \`${LONG_COOKIE}\`)`;
    const entryPoints = s.entryPoints.length ? { entryPoints: s.entryPoints } : {};
    const middlewares = s.middlewares.length ? { middlewares: s.middlewares } : {};
    // The two rules are disjoint; the POST router keeps the priority one above its sibling that
    // --fast-path-priority documents.
    routers[`${name}-post`] = {
      rule: `Method(\`POST\`) && ${match}${postRule}`,
      priority: s.priority + 1,
      ...entryPoints,
      ...middlewares,
      service: buffered ? fastPathBodyName(t) : name,
    };
    // No POST here: one the POST router does not take (a body too large, or chunked) is the plugin's.
    routers[name] = {
      rule: `!Method(\`POST\`) && ${match}`,
      priority: s.priority,
      ...entryPoints,
      ...middlewares,
      service: name,
    };
    services[name] = { loadBalancer: { servers: [{ url: t.url }] } };
    if (buffered)
      // Traefik's failover service with a status rule reads the whole body into memory (a buffer
      // of the body's size; the router's Content-Length rule bounds it, and Go's server never
      // reads past a declared length) and passes on a copy. Status 0 is no answer an HTTP server
      // gives, and were it given, the fallback has no server (503): a POST is never sent twice.
      // Answers stream as they come (the failover's writer flushes).
      services[fastPathBodyName(t)] = {
        failover: { service: name, fallback: FAST_PATH_NOWHERE, errors: { status: ["0"], maxRequestBodyBytes: -1 } },
      };
  }
  for (const t of [...retired].sort(byName))
    services[fastPathName(t)] ??= { loadBalancer: { servers: [{ url: t.url }] } };
  const http = {
    ...(Object.keys(routers).length ? { routers } : {}),
    ...(Object.keys(services).length ? { services } : {}),
  };
  // An empty `http` is an error to Traefik ("http cannot be a standalone element"), and one bad
  // file makes it drop the whole directory's configuration: nothing to say is an empty document.
  return `${JSON.stringify(Object.keys(http).length ? { http } : {}, null, 2)}\n`;
}

/** Retired incarnations whose services (and request counts) the file keeps, newest first. */
const RETIRED_KEPT = 64;

export interface FastPathWriterOptions {
  file: string;
  settings: FastPathSettings;
  log: Logger;
  metrics: Pick<SidecarMetrics, "fastPathRouters" | "fastPathWrites">;
  fs?: ViewFs;
}

/**
 * Keeps the file in step with the live incarnations: written only when its text changes, since
 * every write makes Traefik rebuild all its routers (and the plugin's instance pools). The new text
 * is written beside the watched directory and renamed into it: Traefik's file provider reloads on
 * any event in the directory, and a temporary file there would spend its throttle window on an
 * unchanged configuration. Writes do not overlap: a change during a write is written after it.
 */
export class FastPathWriter {
  #written: string | null = null;
  #pending: string | null = null;
  #writing: Promise<void> | null = null;
  /** Incarnations written as live before, by name: kept (as services) once they are no longer live. */
  readonly #seen = new Map<string, FastPathTarget>();
  /** The temporary file goes beside the directory while it shares its file system; otherwise (EXDEV) inside it, from then on. */
  #tmpBeside = true;

  constructor(private readonly o: FastPathWriterOptions) {
    for (const result of ["ok", "error"]) o.metrics.fastPathWrites.inc({ result }, 0);
  }

  update(live: FastPathTarget[]): Promise<void> {
    const liveNames = new Set(live.map(fastPathName));
    for (const t of live) {
      // Most recently live last: the oldest retired ones leave first.
      this.#seen.delete(fastPathName(t));
      this.#seen.set(fastPathName(t), t);
    }
    const retired = [...this.#seen.entries()].filter(([n]) => !liveNames.has(n));
    for (const [n] of retired.slice(0, Math.max(0, retired.length - RETIRED_KEPT))) this.#seen.delete(n);
    const text = renderFastPath(
      live,
      this.o.settings,
      retired.slice(-RETIRED_KEPT).map(([, t]) => t),
    );
    this.o.metrics.fastPathRouters.set(live.length);
    if (text === (this.#pending ?? this.#written)) return this.#writing ?? Promise.resolve();
    this.#pending = text;
    this.#writing ??= this.drain();
    return this.#writing;
  }

  /** Resolves once no write is in progress. */
  idle(): Promise<void> {
    return this.#writing ?? Promise.resolve();
  }

  private async write(text: string): Promise<void> {
    const { file, fs } = this.o;
    const io = { fs: fs ?? defaultViewFs };
    if (this.#tmpBeside) {
      try {
        return await atomicWrite(file, text, { ...io, tmpDir: dirname(dirname(file)) });
      } catch (err) {
        if (errFields(err).code !== "EXDEV" && errFields(err).code !== "EACCES") throw err;
        this.#tmpBeside = false;
        this.o.log.warn(
          { file, err: errFields(err) },
          "fast path: the temporary file cannot go beside the directory; writing it inside (each write may wait out Traefik's providersThrottleDuration)",
        );
      }
    }
    await atomicWrite(file, text, io);
  }

  private async drain(): Promise<void> {
    const { file, log, metrics } = this.o;
    while (this.#pending !== null && this.#pending !== this.#written) {
      const text = this.#pending;
      try {
        await this.write(text);
        this.#written = text;
        metrics.fastPathWrites.inc({ result: "ok" });
        log.info({ file, routers: countRouters(text) }, "fast path written");
      } catch (err) {
        // The previous file stays: Traefik keeps routing by it, and tokens of incarnations it does
        // not list still reach the plugin. Tried again on the next change or meta refresh.
        metrics.fastPathWrites.inc({ result: "error" });
        log.error({ file, err: errFields(err) }, "fast path not written");
        if (this.#pending === text) this.#pending = null;
        break;
      }
      if (this.#pending === text) this.#pending = null;
    }
    this.#writing = null;
  }
}

const countRouters = (text: string) =>
  Object.keys((JSON.parse(text) as { http: { routers?: object } }).http.routers ?? {}).length;
