// Cookie header handling on raw bytes (byte-exact: other cookies pass through unchanged).
// `values` holds every Cookie header line, each NUL-terminated, as the host returns them.
import { Bytes } from "./bytes";

/** Start/end of the value found by findCookie (end == -1: not found). */
// Module globals rather than a returned object: no allocation per request (one page of memory).
export let foundStart: i32 = 0;
export let foundEnd: i32 = -1;

@inline function isSpace(c: u8): bool {
  return c == 32 || c == 9;
}

function nameEquals(b: Bytes, start: i32, end: i32, name: string): bool {
  if (end - start != name.length) return false;
  for (let i = 0; i < name.length; i++) if (<i32>b.at(start + i) != name.charCodeAt(i)) return false;
  return true;
}

/**
 * Calls `visit(values, pairStart, pairEnd, eqPos)` for each cookie pair of every line, trimmed.
 * eqPos is -1 for a pair without '='. Returns early when visit returns false.
 */
function eachPair(values: Bytes, visit: (b: Bytes, s: i32, e: i32, eq: i32) => bool): void {
  let i = 0;
  const n = values.len;
  while (i < n) {
    // one pair: up to ';' or NUL
    let s = i;
    while (s < n && isSpace(values.at(s))) s++;
    let e = s;
    let eq = -1;
    while (e < n) {
      const c = values.at(e);
      if (c == 59 || c == 0) break;
      if (c == 61 && eq < 0) eq = e;
      e++;
    }
    const next = e + 1;
    while (e > s && isSpace(values.at(e - 1))) e--;
    if (e > s && !visit(values, s, e, eq)) return;
    i = next;
  }
}

// The closures passed to eachPair cannot capture locals in AssemblyScript: their inputs go through globals.
let wantName: string = "";

/** Finds the first `name=value` pair; sets foundStart/foundEnd (quotes stripped). */
export function findCookie(values: Bytes, name: string): bool {
  wantName = name;
  foundEnd = -1;
  eachPair(values, (b: Bytes, s: i32, e: i32, eq: i32): bool => {
    if (eq < 0 || !nameEquals(b, s, eq, wantName)) return true;
    let vs = eq + 1;
    let ve = e;
    if (ve - vs >= 2 && b.at(vs) == 34 && b.at(ve - 1) == 34) { vs++; ve--; }
    foundStart = vs;
    foundEnd = ve;
    return false;
  });
  return foundEnd >= 0;
}

/** True when bytes [start,end) of `b` equal the ASCII string `s`. */
export function rangeEquals(b: Bytes, start: i32, end: i32, s: string): bool {
  return nameEquals(b, start, end, s);
}

let outRef: Bytes | null = null;

function safePair(b: Bytes, s: i32, e: i32): bool {
  for (let i = s; i < e; i++) {
    const c = b.at(i);
    if ((c < 32 && c != 9) || c == 127) return false;
  }
  return true;
}

/**
 * Writes one Cookie line into `out`: `name=owner` first (Traefik obeys the first), then every
 * other pair of every line in order. Pairs named `name`, and pairs with control bytes, are dropped.
 */
/**
 * Whether the line buildPinnedCookie writes from `values` fits `capacity` bytes. Each kept pair
 * gets a "; " before it, so many short pairs ("a;a;a") come out about half as long again as they
 * went in; lines short enough that even one pair per input byte would fit are not scanned (the
 * request path reads ordinary Cookie lines once, in findCookie).
 */
export function pinnedCookieFits(values: Bytes, name: string, capacity: i32): bool {
  // At most one pair per two input bytes, each written with 2 more: 2 * len + 1 bounds them all.
  const prefix = name.length + 1 + 16;
  if (prefix + 2 * values.len + 1 <= capacity) return true;
  return pinnedCookieLength(values, name) <= capacity;
}

/** The length of the line buildPinnedCookie writes from `values` (owner cookie values are 16 hex digits). */
function pinnedCookieLength(values: Bytes, name: string): i32 {
  wantName = name;
  lineLength = name.length + 1 + 16;
  eachPair(values, (b: Bytes, s: i32, e: i32, eq: i32): bool => {
    const nameEnd = eq < 0 ? e : eq;
    if (!nameEquals(b, s, nameEnd, wantName) && safePair(b, s, e)) lineLength += 2 + e - s;
    return true;
  });
  return lineLength;
}
let lineLength: i32 = 0;

export function buildPinnedCookie(values: Bytes, name: string, owner: string, out: Bytes): void {
  out.clear();
  out.pushAscii(name);
  out.pushByte(61);
  out.pushAscii(owner);
  wantName = name;
  outRef = out;
  eachPair(values, (b: Bytes, s: i32, e: i32, eq: i32): bool => {
    const nameEnd = eq < 0 ? e : eq;
    if (nameEquals(b, s, nameEnd, wantName) || !safePair(b, s, e)) return true;
    const o = outRef!;
    o.pushByte(59);
    o.pushByte(32);
    o.pushBytes(b, s, e);
    return true;
  });
  outRef = null;
}
