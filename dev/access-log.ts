// Traefik's JSON access log, as the stack configures it (dev/traefik-config.ts renderStatic).
import { readFileSync } from "node:fs";

export interface AccessLogRow {
  StartUTC: string;
  RequestMethod: string;
  RouterName?: string;
  ServiceURL?: string;
  DownstreamStatus: number;
  DownstreamContentSize: number;
  OriginStatus?: number;
  Duration: number;
  [k: string]: unknown;
}

/**
 * An access-log row of a /mcp POST whose answer Traefik's proxy cut (golang/go#40747): handed to a
 * node, origin status never filled, an empty 200 downstream. With the plugin's buffered bodies
 * this should not happen; a test may excuse a failed call only by its own row (by identity).
 */
export function isProxyCut(r: AccessLogRow): boolean {
  return (
    (r.RouterName ?? "").includes("mcp") &&
    !!r.ServiceURL &&
    (r.OriginStatus ?? 0) === 0 &&
    r.DownstreamStatus === 200 &&
    r.DownstreamContentSize === 0 &&
    r.RequestMethod === "POST"
  );
}

/** Every complete line of the log file (none when it does not exist yet). */
export function readAccessLog(file: string): AccessLogRow[] {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return [];
  }
  const rows: AccessLogRow[] = [];
  for (const line of text.split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      rows.push(JSON.parse(line));
    } catch {
      /* a line being written */
    }
  }
  return rows;
}
