// Node health as Traefik sees it, for nodes that do not run the library: the servers of the MCP
// service(s) and their serverStatus, from Traefik's API (GET /api/http/services/<name>).
import { McpAffinityError } from "../../lib/errors.ts";
export interface TraefikServer {
  url: string;
  up: boolean;
}

export class TraefikApiError extends McpAffinityError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("ERR_TRAEFIK_API", message, options);
  }
}

/** GET `path` on Traefik's API address; 200 or a TraefikApiError. */
async function traefikGet(api: string, path: string, timeoutMs: number): Promise<Response> {
  // Credentials in the URL (basic auth on Traefik's API) go into a header: fetch refuses them in URLs.
  const u = new URL(api);
  const headers: Record<string, string> = {};
  if (u.username || u.password) {
    headers.authorization =
      "Basic " + Buffer.from(`${decodeURIComponent(u.username)}:${decodeURIComponent(u.password)}`).toString("base64");
    u.username = "";
    u.password = "";
  }
  const base = u.toString().replace(/\/+$/, "");
  let res: Response;
  try {
    res = await fetch(`${base}${path}`, { headers, signal: AbortSignal.timeout(timeoutMs) });
  } catch (err) {
    throw new TraefikApiError(`Traefik API unreachable: ${(err as Error).message}`);
  }
  if (res.status !== 200) {
    await res.body?.cancel();
    throw new TraefikApiError(`Traefik API answered ${res.status} for ${path}`);
  }
  return res;
}

/**
 * Requests Traefik counted per service whose name starts with `prefix` (`traefik_service_requests_total`
 * summed over code, method and protocol), from its Prometheus endpoint.
 */
export async function readTraefikServiceRequests(
  metricsUrl: string,
  prefix: string,
  timeoutMs = 2000,
): Promise<ServiceRequests> {
  const text = await (await traefikGet(metricsUrl, "", timeoutMs)).text();
  return { counts: serviceRequestCounts(text, prefix), startedAtMs: processStartMs(text) };
}

/** Traefik's request counts of some services, and when its process started (null: not exported). */
export interface ServiceRequests {
  counts: Map<string, number>;
  startedAtMs: number | null;
}

/** `process_start_time_seconds` of a Prometheus text page, in ms (null when absent). */
export function processStartMs(text: string): number | null {
  const m = /^process_start_time_seconds\s+(\S+)$/m.exec(text);
  const v = m ? Number(m[1]) : NaN;
  return Number.isFinite(v) && v > 0 ? Math.round(v * 1000) : null;
}

/** The sums of `traefik_service_requests_total` per service named `prefix...` in a Prometheus text page. */
export function serviceRequestCounts(text: string, prefix: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (!line.startsWith("traefik_service_requests_total{")) continue;
    const m = /service="([^"]*)"[^}]*\}\s+(\S+)/.exec(line);
    if (!m || !m[1]!.startsWith(prefix)) continue;
    const v = Number(m[2]);
    if (Number.isFinite(v)) out.set(m[1]!, (out.get(m[1]!) ?? 0) + v);
  }
  return out;
}

/** Reads every service; throws TraefikApiError when any cannot be read (then nothing is applied). */
export async function readTraefikServers(api: string, services: string[], timeoutMs = 2000): Promise<TraefikServer[]> {
  const out: TraefikServer[] = [];
  for (const name of services) {
    const res = await traefikGet(api, `/api/http/services/${encodeURIComponent(name)}`, timeoutMs);
    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- parsed JSON, checked field by field below
    let body: any;
    try {
      body = await res.json();
    } catch {
      throw new TraefikApiError(`Traefik API sent no JSON for service ${name}`);
    }
    const servers: unknown = body?.loadBalancer?.servers;
    if (!Array.isArray(servers)) throw new TraefikApiError(`service ${name} has no loadBalancer servers`);
    const status: Record<string, string> =
      body?.serverStatus && typeof body.serverStatus === "object" ? body.serverStatus : {};
    for (const s of servers) {
      if (!s || typeof s.url !== "string") continue;
      // No status entry (no health check configured): Traefik routes to it, so it is up.
      out.push({ url: s.url, up: status[s.url] === undefined || status[s.url] === "UP" });
    }
  }
  return out;
}
