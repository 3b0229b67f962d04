// Loopback plumbing: a free port, a GET that never throws.
import { createServer } from "node:net";

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.unref();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** GET `url`; null when nothing answers within `timeoutMs`. */
export async function httpGet(url: string, timeoutMs = 1000): Promise<{ status: number; text: string } | null> {
  try {
    const r = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    return { status: r.status, text: await r.text() };
  } catch {
    return null;
  }
}
