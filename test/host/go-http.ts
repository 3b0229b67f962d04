// Small pieces of Go's net/http and encoding/json semantics the http-wasm host relies on, so the
// fake host treats header names, header maps and the guest config exactly as Traefik does.

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]$/;

/** textproto.CanonicalMIMEHeaderKey: names with a non-token byte are returned unchanged. */
const canonicalCache = new Map<string, string>();
export function canonicalHeaderKey(name: string): string {
  let k = canonicalCache.get(name);
  if (k === undefined) {
    k = canonicalize(name);
    if (canonicalCache.size < 10_000) canonicalCache.set(name, k);
  }
  return k;
}
function canonicalize(name: string): string {
  for (const c of name) if (!TOKEN.test(c)) return name;
  let upper = true;
  let out = "";
  for (const c of name) {
    out += upper ? c.toUpperCase() : c.toLowerCase();
    upper = c === "-";
  }
  return out;
}

/** Go's http.TrailerPrefix: nethttp stores trailers in the response header map under it. */
export const TRAILER_PREFIX = "Trailer:";

/** http.Header: canonical key -> values, with Go's Set/Add/Del/Values semantics. */
export class GoHeader {
  readonly map = new Map<string, string[]>();

  static from(init?: HeaderInit): GoHeader {
    const h = new GoHeader();
    if (!init) return h;
    const pairs: [string, string][] = Array.isArray(init)
      ? init
      : Object.entries(init).flatMap(([k, v]) =>
          Array.isArray(v) ? v.map((x) => [k, x] as [string, string]) : [[k, v] as [string, string]],
        );
    for (const [k, v] of pairs) h.add(k, v);
    return h;
  }

  values(name: string): string[] {
    return [...(this.map.get(canonicalHeaderKey(name)) ?? [])];
  }
  get(name: string): string | undefined {
    return this.map.get(canonicalHeaderKey(name))?.[0];
  }
  has(name: string): boolean {
    return this.map.has(canonicalHeaderKey(name));
  }
  set(name: string, value: string): void {
    this.map.set(canonicalHeaderKey(name), [value]);
  }
  add(name: string, value: string): void {
    const k = canonicalHeaderKey(name);
    const cur = this.map.get(k);
    if (cur) cur.push(value);
    else this.map.set(k, [value]);
  }
  del(name: string): void {
    this.map.delete(canonicalHeaderKey(name));
  }
  /** Raw keys, unsorted, as stored. */
  keys(): string[] {
    return [...this.map.keys()];
  }
  clone(): GoHeader {
    const h = new GoHeader();
    for (const [k, v] of this.map) h.map.set(k, [...v]);
    return h;
  }
  /** Plain object (lower-case names -> values) for assertions. */
  toObject(): Record<string, string[]> {
    const o: Record<string, string[]> = {};
    for (const [k, v] of this.map) o[k.toLowerCase()] = [...v];
    return o;
  }
}

export type HeaderInit = [string, string][] | Record<string, string | string[]>;

/** Go byte-wise string order (sort.Strings) on UTF-8; header names are ASCII in practice. */
export function goSortStrings(a: string[]): string[] {
  return a.sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
}

/**
 * encoding/json.Marshal of the map[string]any Traefik hands to the guest: keys sorted, and the
 * HTML-safe escapes Go applies by default (<, >, &, U+2028, U+2029).
 */
export function goJsonMarshal(v: unknown): string {
  const esc = (s: string) =>
    JSON.stringify(s).replace(/[<>&\u2028\u2029]/g, (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
  const enc = (x: unknown): string => {
    if (x === null || x === undefined) return "null";
    if (typeof x === "string") return esc(x);
    if (typeof x === "number") {
      if (!Number.isFinite(x)) throw new Error("json: unsupported value");
      return JSON.stringify(x);
    }
    if (typeof x === "bigint") return x.toString();
    if (typeof x === "boolean") return x ? "true" : "false";
    if (Array.isArray(x)) return "[" + x.map(enc).join(",") + "]";
    if (typeof x === "object") {
      const keys = Object.keys(x as object).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
      return "{" + keys.map((k) => esc(k) + ":" + enc((x as Record<string, unknown>)[k])).join(",") + "}";
    }
    throw new Error("json: unsupported type " + typeof x);
  };
  return enc(v);
}
