// The SDK transports of this node: each wired so that a new session is registered inside
// onsessioninitialized (which the SDK awaits before it builds the initialize answer) and closed
// through the node's close path however it ends (client DELETE, server.close(), transport.close()).
import {
  StreamableHTTPServerTransport,
  type StreamableHTTPServerTransportOptions,
} from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { errFields } from "../../lib/errors.ts";
import { isValidSessionId, sessionTag } from "../../lib/registry/index.ts";
import { bootTag, mintSessionId } from "../../lib/token/index.ts";
import type { CloseResult } from "./close.ts";
import type { NodeContext } from "./context.ts";
import type { AffinityState } from "./lifecycle.ts";
import { AffinityConfigError } from "./options.ts";
import type { ConnectableServer, SessionTable } from "./sessions.ts";

export type TransportExtras = Omit<
  StreamableHTTPServerTransportOptions,
  "sessionIdGenerator" | "onsessioninitialized" | "onsessionclosed"
> & {
  onsessioninitialized?: (sessionId: string) => void | Promise<void>;
  onsessionclosed?: (sessionId: string) => void | Promise<void>;
};

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

export class Transports {
  readonly #genId: () => string;
  /** Which server a transport is connected to, so a close closes both. */
  readonly #servers = new WeakMap<StreamableHTTPServerTransport, ConnectableServer>();

  constructor(
    private readonly ctx: NodeContext,
    private readonly table: SessionTable,
    private readonly close: (id: string) => Promise<CloseResult>,
    /** The lifecycle state: a session initialized once the node is no longer up is logged (it is cut at stop). */
    private readonly state: () => AffinityState,
  ) {
    this.#genId = sessionIdGenerator(ctx);
  }

  create(extras: TransportExtras = {}, server?: ConnectableServer): StreamableHTTPServerTransport {
    const { onsessioninitialized: userInit, onsessionclosed: userClosed, ...rest } = extras;
    const { log } = this.ctx;
    const transport: StreamableHTTPServerTransport = new StreamableHTTPServerTransport({
      ...rest,
      sessionIdGenerator: this.#genId,
      onsessioninitialized: async (id: string) => {
        const entry = this.table.add(id, transport, server ?? this.#servers.get(transport));
        const state = this.state();
        if (state !== "up") log.warn({ session: sessionTag(id), state }, "new session while draining");
        await this.table.register(id, entry);
        await userInit?.(id);
      },
      onsessionclosed: async (id: string) => {
        // A DELETE from the client: never throw back into the SDK, the outcome is logged and counted.
        await this.close(id);
        try {
          await userClosed?.(id);
        } catch (err) {
          log.warn({ session: sessionTag(id), err: errFields(err) }, "onsessionclosed hook failed");
        }
      },
    });
    // A server-side close (server.close(), transport.close()) ends the session too: clean up once.
    transport.onclose = () => {
      const id = transport.sessionId;
      if (id !== undefined && this.table.get(id)?.transport === transport) void this.close(id);
    };
    return transport;
  }

  bind(transport: StreamableHTTPServerTransport, server: ConnectableServer): void {
    this.#servers.set(transport, server);
    const id = transport.sessionId;
    const entry = id === undefined ? undefined : this.table.get(id);
    if (entry && entry.transport === transport) entry.server = server;
  }

  /** The transport serving a session in this process, if any. */
  transportFor(id: string): StreamableHTTPServerTransport | undefined {
    return this.table.get(id)?.transport;
  }
}
