// What sits in front of several Traefik replicas in production, in two flavours:
// - a TCP proxy on loopback that picks a replica at random for each NEW connection and then pipes
//   bytes both ways (a Kubernetes Service in iptables mode, a cloud NLB): a client's connections
//   may land on different replicas, every request on one connection on the same one;
// - a `fetch` for the TypeScript SDK client that sends every HTTP request to a random replica
//   (an L7 balancer without affinity), the harder case.
import { createServer, connect, type Server, type Socket } from "node:net";
import { Agent, fetch as undiciFetch } from "undici";

export interface L4Target {
  host: string;
  port: number;
}

export interface L4Balancer {
  port: number;
  /** http://127.0.0.1:<port> */
  base: string;
  /** Connections accepted so far, per target index. */
  picks: number[];
  /** Connections refused because `maxConnections` were open. */
  refused: number;
  /** Connections open now (client side). */
  readonly open: number;
  /** Stops listening and destroys every open connection. */
  close(): Promise<void>;
}

export interface L4BalancerOptions {
  targets: L4Target[];
  /** 0: a free port. */
  port?: number;
  host?: string;
  /** Open connections at most; a connection past the bound is closed at once (default 512). */
  maxConnections?: number;
  /** Picks a target index (default: uniform random). */
  pick?: (n: number) => number;
}

export const randomIndex = (n: number) => Math.floor(Math.random() * n);

export async function startL4Balancer(opts: L4BalancerOptions): Promise<L4Balancer> {
  if (opts.targets.length === 0) throw new Error("l4-balancer: no targets");
  const max = opts.maxConnections ?? 512;
  const pick = opts.pick ?? randomIndex;
  const host = opts.host ?? "127.0.0.1";
  const sockets = new Set<Socket>();
  const picks = opts.targets.map(() => 0);
  let refused = 0;
  let clientsOpen = 0;

  const server: Server = createServer((client) => {
    if (clientsOpen >= max) {
      refused++;
      client.destroy();
      return;
    }
    clientsOpen++;
    client.once("close", () => clientsOpen--);
    const i = pick(opts.targets.length);
    picks[i]!++;
    const t = opts.targets[i]!;
    const upstream = connect(t.port, t.host);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.setNoDelay(true);
      s.once("close", () => sockets.delete(s));
      // A reset on one side closes the other: no half-open pair is left behind.
      s.on("error", () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, host, () => resolve());
  });
  const port = (server.address() as { port: number }).port;
  return {
    port,
    base: `http://${host}:${port}`,
    picks,
    get refused() {
      return refused;
    },
    get open() {
      return clientsOpen;
    },
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}

/**
 * A fetch that sends every request to a random one of `bases` (same path and query), over its own
 * connection pool: one per user, so a user's connections are its own (close() when done).
 */
export function randomReplicaFetch(
  bases: string[],
  pick: (n: number) => number = randomIndex,
): { fetch: typeof fetch; picks: number[]; close(): Promise<void> } {
  const agent = new Agent({ connections: 8 });
  const picks = bases.map(() => 0);
  const f = (async (input: RequestInfo | URL, init?: RequestInit) => {
    const u = new URL(typeof input === "string" || input instanceof URL ? input : input.url);
    const i = pick(bases.length);
    picks[i]!++;
    const target = new URL(u.pathname + u.search, bases[i]);
    return undiciFetch(target, { ...(init as object), dispatcher: agent } as Parameters<typeof undiciFetch>[1]);
  }) as unknown as typeof fetch;
  return { fetch: f, picks, close: () => agent.destroy() };
}

/** A fetch over its own connection pool (one user behind the L4 balancer); close() when done. */
export function ownConnectionsFetch(): { fetch: typeof fetch; close(): Promise<void> } {
  const agent = new Agent({ connections: 8 });
  const f = ((input: RequestInfo | URL, init?: RequestInit) =>
    undiciFetch(
      input as Parameters<typeof undiciFetch>[0],
      { ...(init as object), dispatcher: agent } as Parameters<typeof undiciFetch>[1],
    )) as unknown as typeof fetch;
  return { fetch: f, close: () => agent.destroy() };
}
