// The status page's files (status.html + status.js, plain, no build step), served by the sidecar's
// HTTP server at /status and /status.js. The page reads only /metrics, which holds no session id.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export interface StaticFile {
  headers: Record<string, string>;
  body: Buffer;
}

const here = dirname(fileURLToPath(import.meta.url));
// The page loads its script and fetches /metrics from the same origin, nothing else.
const CSP =
  "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'";

let files: Map<string, StaticFile> | null = null;
function load(): Map<string, StaticFile> {
  const common = { "cache-control": "no-store", "x-content-type-options": "nosniff" };
  return new Map([
    [
      "/status",
      {
        headers: { ...common, "content-type": "text/html; charset=utf-8", "content-security-policy": CSP },
        body: readFileSync(join(here, "status.html")),
      },
    ],
    [
      "/status.js",
      {
        headers: { ...common, "content-type": "text/javascript; charset=utf-8" },
        body: readFileSync(join(here, "status.js")),
      },
    ],
  ]);
}

/** The status page file for a request path, or null when the path is not one of them. */
export function statusFile(path: string): StaticFile | null {
  if (path !== "/status" && path !== "/status.js") return null;
  files ??= load();
  return files.get(path) ?? null;
}
