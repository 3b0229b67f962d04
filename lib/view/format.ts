// What the shared-directory formats (docs/registry-view.md) have in common: the record types, the
// session hash, the lexical rules (lowercase hex, decimal integers without leading zeros) and the
// one error class their decoders and encoders throw.
import { McpAffinityError } from "../errors.ts";

export type NodeViewState = "up" | "draining" | "down" | "gone";
export interface ViewNode {
  id: number;
  cookie: string;
  state: NodeViewState;
  retryAfterSeconds?: number;
}
/** One incarnation of a node (`boot` line): what a session id's routing token is checked against. */
export interface ViewBoot {
  cookie: string;
  /** lib/token bootTag(boot id), or UNKNOWN_BOOT_TAG for a node whose boot is not known. */
  bootTag: string;
  state: NodeViewState;
  retryAfterSeconds?: number;
}
export interface ViewSession {
  hash: Buffer /* 16 bytes */;
  node: number;
  closed?: boolean;
}
export type ShardBits = 4 | 8 | 12 | 16;
export interface ViewMeta {
  epoch: number;
  generation: number;
  published: number;
  shardBits: ShardBits;
  nodes: ViewNode[];
  /** Node incarnations for routing tokens (absent in views written before tokens existed). */
  boots?: ViewBoot[];
}

// The formats name sessions by the registry's session hash (lib/registry/session-hash.ts).
export { SESSION_HASH_BYTES as HASH_BYTES, sessionHash } from "../registry/session-hash.ts";

export class ViewFormatError extends McpAffinityError {
  constructor(message: string) {
    super("ERR_VIEW_FORMAT", message);
  }
}

export const HEX32 = /^[0-9a-f]{32}$/;
export const BOOT_TAG = /^[0-9a-f]{8}$/;
/** A decimal integer as the formats write it: no sign, no leading zeros. */
export const DEC = /^(0|[1-9][0-9]*)$/;
const U32_MAX = 0xffff_ffff;
export const isU32 = (n: unknown): n is number => Number.isInteger(n) && (n as number) >= 0 && (n as number) <= U32_MAX;
export const isShardBits = (n: unknown): n is ShardBits => n === 4 || n === 8 || n === 12 || n === 16;
export const STATES: ReadonlySet<string> = new Set(["up", "draining", "down", "gone"]);
