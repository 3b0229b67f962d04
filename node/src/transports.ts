// The SDK transports of this node: each wired so that a new session is registered inside
// onsessioninitialized (which the SDK awaits before it builds the initialize answer) and closed
// through the node's close path however it ends (client DELETE, server.close(), transport.close()).
// Both SDK lines' Streamable HTTP transports take the same three session options; one wiring
// serves both (the v1 transport in affinity.ts, the v2 one in v2.ts).
import { errFields } from "../../lib/errors.ts";
import { isValidSessionId, sessionTag } from "../../lib/registry/index.ts";
import { bootTag, mintSessionId } from "../../lib/token/index.ts";
import type { CloseResult } from "./close.ts";
import type { NodeContext } from "./context.ts";
import type { AffinityState } from "./lifecycle.ts";
import { AffinityConfigError } from "./options.ts";
import type { ClosableServer, SessionTable, SessionTransport } from "./sessions.ts";

/** The session options the library sets on every transport it makes. */
export interface SessionHooks {
  sessionIdGenerator: () => string;
  onsessioninitialized: (sessionId: string) => Promise<void>;
  onsessionclosed: (sessionId: string) => Promise<void>;
}

/** The application's own session hooks: run after the library's. */
export interface UserSessionHooks {
  onsessioninitialized?: (sessionId: string) => void | Promise<void>;
  onsessionclosed?: (sessionId: string) => void | Promise<void>;
}

/** A transport the library can wire: its close callback is chained by the SDK's connect(). */
export interface WirableTransport extends SessionTransport {
  onclose?: (() => void) | undefined;
}

/**
 * The node's session ids. Default: ids carrying a routing token (owner cookie + boot tag) so every
 * Traefik replica routes them at once. Whatever the generator, an id the edge or the registry would
 * refuse (the one session-id rule) is never handed out.
 */
export function sessionIdGenerator(ctx: NodeContext): () => string {
  const tag = bootTag(ctx.bootId);
  const gen = ctx.settings.sessionIdGenerator ?? (() => mintSessionId(ctx.settings.cookie, tag));
  return () => {
    const id = gen();
    if (!isValidSessionId(id))
      throw new AffinityConfigError(
        "sessionIdGenerator returned an id outside the session-id rule (1-1024 visible ASCII characters)",
      );
    return id;
  };
}

/** Everything a session transport factory needs from the node (see Affinity.sessionTransports). */
export interface TransportWiring {
  ctx: NodeContext;
  table: SessionTable;
  close: (id: string) => Promise<CloseResult>;
  /** The lifecycle state: a session initialized once the node is no longer up is logged (it is cut at stop). */
  state: () => AffinityState;
}

/**
 * Makes the transports of one SDK line: `construct` builds one from the application's transport
 * options (O) and the library's session hooks.
 */
export class SessionTransports<T extends WirableTransport, O extends object> {
  readonly #genId: () => string;
  /** Which server a transport is connected to, so a close closes both. */
  readonly #servers = new WeakMap<T, ClosableServer>();
  /** The transports this factory made: transportFor answers with its own kind only. */
  readonly #made = new WeakSet<SessionTransport>();

  constructor(
    private readonly wiring: TransportWiring,
    private readonly construct: (options: Omit<O, keyof SessionHooks>, hooks: SessionHooks) => T,
  ) {
    this.#genId = sessionIdGenerator(wiring.ctx);
  }

  create(extras: Omit<O, keyof SessionHooks> & UserSessionHooks, server?: ClosableServer): T {
    const { onsessioninitialized: userInit, onsessionclosed: userClosed, ...rest } = extras;
    const { ctx, table, close, state } = this.wiring;
    const { log } = ctx;
    const transport: T = this.construct(rest as Omit<O, keyof SessionHooks>, {
      sessionIdGenerator: this.#genId,
      onsessioninitialized: async (id: string) => {
        const entry = table.add(id, transport, server ?? this.#servers.get(transport));
        const now = state();
        if (now !== "up") log.warn({ session: sessionTag(id), state: now }, "new session while draining");
        await table.register(id, entry);
        await userInit?.(id);
      },
      onsessionclosed: async (id: string) => {
        // A DELETE from the client: never throw back into the SDK, the outcome is logged and counted.
        await close(id);
        try {
          await userClosed?.(id);
        } catch (err) {
          log.warn({ session: sessionTag(id), err: errFields(err) }, "onsessionclosed hook failed");
        }
      },
    });
    this.#made.add(transport);
    // A server-side close (server.close(), transport.close()) ends the session too: clean up once.
    transport.onclose = () => {
      const id = transport.sessionId;
      if (id !== undefined && table.get(id)?.transport === transport) void close(id);
    };
    return transport;
  }

  bind(transport: T, server: ClosableServer): void {
    this.#servers.set(transport, server);
    const id = transport.sessionId;
    const entry = id === undefined ? undefined : this.wiring.table.get(id);
    if (entry && entry.transport === transport) entry.server = server;
  }

  /** The transport of this kind serving a session in this process, if any. */
  transportFor(id: string): T | undefined {
    const transport = this.wiring.table.get(id)?.transport;
    return transport && this.#made.has(transport) ? (transport as T) : undefined;
  }
}
