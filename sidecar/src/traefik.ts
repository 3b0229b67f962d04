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

/** Reads every service; throws TraefikApiError when any cannot be read (then nothing is applied). */
export async function readTraefikServers(api: string, services: string[], timeoutMs = 2000): Promise<TraefikServer[]> {
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
  const out: TraefikServer[] = [];
  for (const name of services) {
    let res: Response;
    try {
      res = await fetch(`${base}/api/http/services/${encodeURIComponent(name)}`, {
        headers,
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      throw new TraefikApiError(`Traefik API unreachable: ${(err as Error).message}`);
    }
    if (res.status !== 200) {
      await res.body?.cancel();
      throw new TraefikApiError(`Traefik API answered ${res.status} for service ${name}`);
    }
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
