// Lowercase hex and decimal as the shared-directory formats write them (docs/registry-view.md).
import { Bytes } from "./bytes";

const HEX = "0123456789abcdef";

/** Appends the lowercase hex of the n bytes at src. */
export function pushHex(out: Bytes, src: usize, n: i32): void {
  for (let i = 0; i < n; i++) {
    const v = load<u8>(src + <usize>i);
    out.pushByte(<u8>HEX.charCodeAt(v >> 4));
    out.pushByte(<u8>HEX.charCodeAt(v & 15));
  }
}

@inline function isLowerHexDigit(c: i32): bool {
  return (c >= 48 && c <= 57) || (c >= 97 && c <= 102);
}

/** True when b[start, start + n) are lowercase hex digits. */
export function isHexBytes(b: Bytes, start: i32, n: i32): bool {
  for (let i = 0; i < n; i++) if (!isLowerHexDigit(b.at(start + i))) return false;
  return true;
}

/** True when b[0, 32) is the lowercase hex of the 16 bytes at `hash`. */
export function sameHashHex(b: Bytes, hash: usize): bool {
  for (let i = 0; i < 16; i++) {
    const v = load<u8>(hash + <usize>i);
    if (b.at(i << 1) != <u8>HEX.charCodeAt(v >> 4) || b.at((i << 1) + 1) != <u8>HEX.charCodeAt(v & 15)) return false;
  }
  return true;
}

/** The largest integer both readers of the formats hold exactly (a JavaScript safe integer). */
export const MAX_DECIMAL: i64 = 9007199254740991;

/** The decimal integer of bytes [start, end) of b, without sign or leading zeros, at most MAX_DECIMAL; -1 otherwise. */
export function parseDecBytes(b: Bytes, start: i32, end: i32): i64 {
  const n = end - start;
  if (n <= 0 || n > 16 || (n > 1 && b.at(start) == 48)) return -1;
  let v: i64 = 0;
  for (let i = start; i < end; i++) {
    const c = <i32>b.at(i);
    if (c < 48 || c > 57) return -1;
    v = v * 10 + <i64>(c - 48);
  }
  return v > MAX_DECIMAL ? -1 : v;
}
