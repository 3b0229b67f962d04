// The session hash: the one function that hashes a session id, and the one place its three
// representations are converted into each other. A clear session id appears only in the registry
// and in events/; everywhere else (the view's shards, learned/, logs, the sidecar's mirror) a
// session is known by this hash.
//
//   Buffer (16 bytes)   the view's formats (shards, lookups)        sessionHash(id)
//   hex (32 digits)     event lines, learned/ names, log tags       sessionHashHex(id), hashToHex
//   key (16 latin1)     the sidecar's mirror (a compact Map key     sessionHashKey(id), hashToKey,
//                       whose string order is the bytes' order)     hexToKey
import * as crypto from "node:crypto";

/** Bytes kept of the SHA-256 digest. */
export const SESSION_HASH_BYTES = 16;

// crypto.hash (Node >= 20.12) skips the Hash object: a full reconcile hashes every id in Redis.
// It reads a string as UTF-8, which is the same bytes as latin1 for visible ASCII (every valid id).
const oneShot = (crypto as unknown as { hash?: (alg: string, data: string, enc: "buffer") => Buffer }).hash;
const VISIBLE_ASCII = /^[\x21-\x7e]*$/;

/** The 16-byte session hash: the first 16 bytes of SHA-256 over the id's bytes (latin1). */
export function sessionHash(id: string): Buffer {
  if (oneShot && VISIBLE_ASCII.test(id)) return oneShot("sha256", id, "buffer").subarray(0, SESSION_HASH_BYTES);
  return crypto.createHash("sha256").update(id, "latin1").digest().subarray(0, SESSION_HASH_BYTES);
}

export const hashToHex = (hash: Buffer): string => hash.toString("hex");
export const hashToKey = (hash: Buffer): string => hash.toString("latin1");
export const hexToKey = (hex: string): string => Buffer.from(hex, "hex").toString("latin1");

export const sessionHashHex = (id: string): string => hashToHex(sessionHash(id));
export const sessionHashKey = (id: string): string => hashToKey(sessionHash(id));

/** Short, log-safe tag for a session id (never log the id itself). */
export const sessionTag = (id: string): string => sessionHashHex(id).slice(0, 12);
