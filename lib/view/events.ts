// events/<s|e>-<slot>.evt (docs/registry-view.md): the batch format the plugin writes and the sidecar parses.
import { isCookieValue, isValidSessionId } from "../registry/schema.ts";
import { sessionHashHex } from "../registry/session-hash.ts";
import { HEX32, DEC } from "./format.ts";
import { McpAffinityError } from "../errors.ts";

export const EVENT_MAGIC = "MCPAEV 1";
/**
 * How the plugin passed a POST body on: `buffered` (copied into Traefik's memory first: the answer
 * cannot be cut by golang/go#40747) or `streamed` (chunked, or above maxBufferedBodyBytes).
 */
export const BODY_KINDS = ["buffered", "streamed"] as const;
export const DECISION_REASONS = [
  "sessionless",
  "pass",
  "pin",
  "repair",
  "reject",
  "lost",
  "unavailable",
  "unknown",
  "invalid",
  "fail-open",
  "handle",
  "handle-lost",
  "handle-unavailable",
  "handle-mismatch",
] as const;

/**
 * The channel of an events/ file by its name: `s-<slot>.evt` session batches (learns, closes,
 * suspected deaths: order matters), `e-<slot>.evt` count batches; null for any other name.
 */
export function eventFileChannel(name: string): "session" | "count" | null {
  const m = EVENT_FILE.exec(name);
  return m ? (m[1] === "s" ? "session" : "count") : null;
}
const EVENT_FILE = /^([es])-[0-9]{1,10}\.evt$/;

export interface EventBatch {
  t: number;
  learned: Array<{ id: string; hash: string; cookie: string }>;
  closed: Array<{ id: string; hash: string; cookie: string | null }>;
  /** Sessions whose owner may have answered 404 (`v` lines): to be checked with the owner. */
  suspects?: Array<{ id: string; hash: string; cookie: string }>;
  /** Sessions the edge saw active (`a` lines): their edge-learned records live on. */
  active?: Array<{ id: string; hash: string }>;
  decisions: Record<string, number>;
  dropped: number;
  /** POSTs with a body by how the plugin passed the body on (`b` lines): buffered, streamed. */
  bodies?: Record<string, number>;
  /**
   * Answers of wrapped sessions that showed the client the server's own Mcp-Session-Id (`w`
   * lines): the router that strips it from those answers is missing (docs/plugin.md).
   */
  exposedServerIds?: number;
  /** Lines skipped by a lenient parse (never written). */
  badLines?: number;
}

export class EventFormatError extends McpAffinityError {
  constructor(message: string) {
    super("ERR_EVENT_FORMAT", message);
  }
}

const REASON = /^[a-z][a-z-]{0,31}$/;
function count(s: string | undefined): number | null {
  if (s === undefined || !DEC.test(s)) return null;
  const n = Number(s);
  return Number.isSafeInteger(n) ? n : null;
}

/** Parses one body line into the batch; returns an error message or null. */
function parseEventLine(line: string, b: EventBatch, seenT: { v: boolean }): string | null {
  const f = line.split(" ");
  switch (f[0]) {
    case "t": {
      const t = count(f[1]);
      if (f.length !== 2 || t === null) return "bad t line";
      if (seenT.v) return "second t line";
      b.t = t;
      seenT.v = true;
      return null;
    }
    case "l":
    case "c":
    case "v": {
      if (f.length !== 4) return `${f[0]} line needs 3 fields`;
      const [, id, hash, cookie] = f;
      if (!isValidSessionId(id)) return `${f[0]} line has no valid session id`;
      if (!HEX32.test(hash)) return `${f[0]} line has no valid hash`;
      if (sessionHashHex(id) !== hash) return `${f[0]} line hash does not match its session id`;
      if (f[0] === "l" || f[0] === "v") {
        if (!isCookieValue(cookie)) return `${f[0]} line has no valid cookie`;
        if (f[0] === "l") b.learned.push({ id, hash, cookie });
        else (b.suspects ??= []).push({ id, hash, cookie });
      } else {
        if (cookie !== "-" && !isCookieValue(cookie)) return "c line has no valid cookie";
        b.closed.push({ id, hash, cookie: cookie === "-" ? null : cookie });
      }
      return null;
    }
    case "a": {
      if (f.length !== 3) return "a line needs 2 fields";
      const [, id, hash] = f;
      if (!isValidSessionId(id)) return "a line has no valid session id";
      if (!HEX32.test(hash) || sessionHashHex(id) !== hash) return "a line hash does not match its session id";
      (b.active ??= []).push({ id, hash });
      return null;
    }
    case "d": {
      const n = count(f[2]);
      if (f.length !== 3 || !REASON.test(f[1]) || n === null) return "bad d line";
      b.decisions[f[1]] = (b.decisions[f[1]] ?? 0) + n;
      return null;
    }
    case "b": {
      const n = count(f[2]);
      if (f.length !== 3 || !(BODY_KINDS as readonly string[]).includes(f[1]!) || n === null) return "bad b line";
      b.bodies ??= {};
      b.bodies[f[1]!] = (b.bodies[f[1]!] ?? 0) + n;
      return null;
    }
    case "w": {
      const n = count(f[1]);
      if (f.length !== 2 || n === null) return "bad w line";
      b.exposedServerIds = (b.exposedServerIds ?? 0) + n;
      return null;
    }
    case "x": {
      const n = count(f[1]);
      if (f.length !== 2 || n === null) return "bad x line";
      b.dropped += n;
      return null;
    }
    default:
      return "unknown line";
  }
}

export interface ParseEventOptions {
  /** Skip (and count in `badLines`) malformed body lines instead of rejecting the batch. */
  lenient?: boolean;
}

/**
 * Parses an event batch. Header, a `t` line and the final `end` are always required; with
 * `lenient`, a malformed body line is skipped and counted instead of failing the whole batch.
 */
export function parseEventBatch(text: string, opts: ParseEventOptions = {}): EventBatch {
  const lines = text.split("\n");
  if (lines[lines.length - 1] === "") lines.pop();
  else throw new EventFormatError("event batch does not end with a newline");
  if (lines[0] !== EVENT_MAGIC) throw new EventFormatError("event batch does not start with MCPAEV 1");
  if (lines.length < 2 || lines[lines.length - 1] !== "end") throw new EventFormatError("event batch has no end line");
  const b: EventBatch = { t: 0, learned: [], closed: [], decisions: {}, dropped: 0 };
  const seenT = { v: false };
  let bad = 0;
  for (let i = 1; i < lines.length - 1; i++) {
    const err = parseEventLine(lines[i], b, seenT);
    if (err) {
      if (!opts.lenient) throw new EventFormatError(`event line ${i + 1}: ${err}`);
      bad++;
    }
  }
  if (!seenT.v) throw new EventFormatError("event batch has no t line");
  if (opts.lenient) b.badLines = bad;
  return b;
}
