// Plugin settings: explicit defaults, parsed and validated once per instance. Values arrive typed
// (Kubernetes CRD) or as strings (file provider, labels); both are accepted.

export const MISROUTE_PIN: i32 = 0;
export const MISROUTE_REJECT: i32 = 1;
export const DOWN_UNAVAILABLE: i32 = 0;
export const DOWN_PASS: i32 = 1;

export class Config {
  viewDir: string = "/var/run/mcp-affinity";
  cookieName: string = "_mcp_backend";
  cookiePath: string = "/";
  cookieSecure: bool = true;
  cookieHttpOnly: bool = true;
  cookieSameSite: string = "Strict";
  onMisroute: i32 = MISROUTE_PIN;
  onOwnerDown: i32 = DOWN_UNAVAILABLE;
  retryAfterSeconds: u32 = 5;
  staleAfterMs: u64 = 5000;
  viewRefreshMs: u64 = 100;
  maxSessionIdLength: i32 = 256;
  learnSessions: bool = true;
  /** Wrap ids of servers that do not mint routing tokens into the plugin's own token format. */
  wrapSessionIds: bool = true;
  /** Wrap task ids (tasks extension) into handles that route themselves; route tasks/* by them. */
  wrapTaskIds: bool = true;
  maxInitializeBodyBytes: i32 = 65536;
  maxBufferedBodyBytes: i32 = 65536;
  maxCookieBytes: i32 = 4096;
  eventFlushMs: u64 = 1000;
  maxEventFiles: u32 = 4096;
  maxSessionEventFiles: u32 = 4096;
  /** learned/ holds at most this many files: 16^learnedDigits (names are hash prefixes). */
  maxLearnedFiles: u32 = 4096;
  learnedDigits: i32 = 3;
  logLevel: i32 = 0; // http-wasm levels: -1 debug, 0 info, 1 warn, 2 error, 3 none
  /** Empty when valid; otherwise one line naming the bad setting. */
  error: string = "";
}

/** A JSON value of the flat config object, kept as its source text. */
class Scalar {
  constructor(public kind: i32, public text: string) {}
}
const K_STRING = 0;
const K_NUMBER = 1;
const K_BOOL = 2;
const K_NULL = 3;
const K_OTHER = 4;

class Parser {
  i: i32 = 0;
  err: string = "";
  constructor(public s: string) {}
  ws(): void {
    while (this.i < this.s.length) {
      const c = this.s.charCodeAt(this.i);
      if (c != 32 && c != 9 && c != 10 && c != 13) break;
      this.i++;
    }
  }
  peek(): i32 {
    return this.i < this.s.length ? this.s.charCodeAt(this.i) : -1;
  }
  str(): string | null {
    if (this.peek() != 34) return null;
    this.i++;
    // Without escapes the string is one substring: building it a character at a time left
    // garbage quadratic in its length, and parsing Traefik's configuration of a dozen settings
    // grew a fresh instance past its first page before the first collection.
    const start = this.i;
    let end = start;
    while (end < this.s.length) {
      const c = this.s.charCodeAt(end);
      if (c == 34) {
        this.i = end + 1;
        return this.s.substring(start, end);
      }
      if (c == 92) break;
      end++;
    }
    let out = "";
    while (this.i < this.s.length) {
      const c = this.s.charCodeAt(this.i++);
      if (c == 34) return out;
      if (c == 92) {
        if (this.i >= this.s.length) return null;
        const e = this.s.charCodeAt(this.i++);
        if (e == 110) out += "\n";
        else if (e == 116) out += "\t";
        else if (e == 114) out += "\r";
        else if (e == 98) out += "\b";
        else if (e == 102) out += "\f";
        else if (e == 117) {
          if (this.i + 4 > this.s.length) return null;
          const v = I32.parseInt(this.s.substring(this.i, this.i + 4), 16);
          if (isNaN(<f64>v)) return null;
          out += String.fromCharCode(<i32>v);
          this.i += 4;
        } else out += String.fromCharCode(e);
      } else out += String.fromCharCode(c);
    }
    return null;
  }
  /** Skips any JSON value (used for nested values, which no setting takes). */
  skip(): bool {
    const c = this.peek();
    if (c == 34) return this.str() != null;
    if (c == 123 || c == 91) {
      const close = c == 123 ? 125 : 93;
      this.i++;
      this.ws();
      if (this.peek() == close) { this.i++; return true; }
      while (true) {
        this.ws();
        if (c == 123) {
          if (this.str() == null) return false;
          this.ws();
          if (this.peek() != 58) return false;
          this.i++;
          this.ws();
        }
        if (!this.skip()) return false;
        this.ws();
        const d = this.peek();
        this.i++;
        if (d == close) return true;
        if (d != 44) return false;
      }
    }
    const start = this.i;
    while (this.i < this.s.length) {
      const d = this.s.charCodeAt(this.i);
      if (d == 44 || d == 125 || d == 93 || d == 32 || d == 10 || d == 13 || d == 9) break;
      this.i++;
    }
    return this.i > start;
  }
  scalar(): Scalar | null {
    const c = this.peek();
    if (c == 34) {
      const s = this.str();
      return s == null ? null : new Scalar(K_STRING, s);
    }
    const start = this.i;
    if (!this.skip()) return null;
    const text = this.s.substring(start, this.i);
    if (c == 123 || c == 91) return new Scalar(K_OTHER, text);
    if (text == "true" || text == "false") return new Scalar(K_BOOL, text);
    if (text == "null") return new Scalar(K_NULL, text);
    return new Scalar(K_NUMBER, text);
  }
}

function parseUint(text: string, lo: u64, hi: u64): i64 {
  const t = text.trim();
  if (t.length == 0 || t.length > 12) return -1;
  let v: u64 = 0;
  for (let i = 0; i < t.length; i++) {
    const c = t.charCodeAt(i);
    if (c < 48 || c > 57) return -1;
    v = v * 10 + <u64>(c - 48);
  }
  return v < lo || v > hi ? -1 : <i64>v;
}

function isToken(s: string): bool {
  if (s.length == 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    // RFC 6265 cookie-name: token characters only.
    if (c <= 32 || c >= 127 || "()<>@,;:\\\"/[]?={}".includes(String.fromCharCode(c))) return false;
  }
  return true;
}

function isCookieAttr(s: string): bool {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 32 || c >= 127 || c == 59) return false;
  }
  return true;
}

/** The largest Cookie lines the plugin reads: what fits its first memory page (read and rewritten). */
export const MAX_COOKIE_READ_BYTES: i32 = 4096;

/** learned/ names are the first `digits` hex digits of the hash: n must be a power of 16. */
function hexDigitsFor(n: u32): i32 {
  let digits = 0;
  let v: u32 = 1;
  while (v < n) {
    v <<= 4;
    digits++;
  }
  return v == n ? digits : -1;
}

function bad(name: string, why: string): string {
  return "mcp-affinity: invalid setting " + name + ": " + why + "; the plugin passes every request untouched until it is fixed";
}

function applyOne(c: Config, key: string, v: Scalar): string {
  const t = v.text;
  if (v.kind == K_OTHER || v.kind == K_NULL) return bad(key, "expected a single value");
  if (key == "viewDir") {
    if (!t.startsWith("/")) return bad(key, "must be an absolute guest path (one of the plugin's settings.mounts)");
    c.viewDir = t;
  } else if (key == "cookieName") {
    if (!isToken(t)) return bad(key, "must be a cookie name (token characters)");
    c.cookieName = t;
  } else if (key == "cookiePath") {
    if (!t.startsWith("/") || !isCookieAttr(t)) return bad(key, "must start with / and hold no control characters or ;");
    c.cookiePath = t;
  } else if (key == "cookieSameSite") {
    if (t != "Strict" && t != "Lax" && t != "None" && t != "") return bad(key, "must be Strict, Lax, None or empty");
    c.cookieSameSite = t;
  } else if (key == "cookieSecure" || key == "cookieHttpOnly" || key == "learnSessions" || key == "wrapSessionIds" || key == "wrapTaskIds") {
    const lt = asciiLower(t.trim());
    if (lt != "true" && lt != "false") return bad(key, "must be true or false");
    const b = lt == "true";
    if (key == "cookieSecure") c.cookieSecure = b;
    else if (key == "cookieHttpOnly") c.cookieHttpOnly = b;
    else if (key == "wrapSessionIds") c.wrapSessionIds = b;
    else if (key == "wrapTaskIds") c.wrapTaskIds = b;
    else c.learnSessions = b;
  } else if (key == "onMisroute") {
    if (t == "pin") c.onMisroute = MISROUTE_PIN;
    else if (t == "reject") c.onMisroute = MISROUTE_REJECT;
    else return bad(key, "must be pin or reject");
  } else if (key == "onOwnerDown") {
    if (t == "unavailable") c.onOwnerDown = DOWN_UNAVAILABLE;
    else if (t == "pass") c.onOwnerDown = DOWN_PASS;
    else return bad(key, "must be unavailable or pass");
  } else if (key == "logLevel") {
    const lt = asciiLower(t);
    if (lt == "debug") c.logLevel = -1;
    else if (lt == "info") c.logLevel = 0;
    else if (lt == "warn") c.logLevel = 1;
    else if (lt == "error") c.logLevel = 2;
    else if (lt == "none") c.logLevel = 3;
    else return bad(key, "must be debug, info, warn, error or none");
  } else {
    let lo: u64 = 0, hi: u64 = 0;
    if (key == "retryAfterSeconds") { lo = 1; hi = 3600; }
    else if (key == "staleAfterMs") { lo = 100; hi = 3600000; }
    else if (key == "viewRefreshMs") { lo = 0; hi = 10000; }
    // SESSION_ID_MAX_LENGTH (lib/registry/schema.ts): the one session-id rule.
    else if (key == "maxSessionIdLength") { lo = 16; hi = 1024; }
    else if (key == "maxInitializeBodyBytes") { lo = 256; hi = 1048576; }
    else if (key == "maxBufferedBodyBytes") { lo = 0; hi = 16777216; }
    // Read into the instance's first memory page: larger Cookie lines get a 431.
    else if (key == "maxCookieBytes") { lo = 64; hi = MAX_COOKIE_READ_BYTES; }
    else if (key == "eventFlushMs") { lo = 100; hi = 60000; }
    else if (key == "maxEventFiles" || key == "maxSessionEventFiles") { lo = 16; hi = 65536; }
    else if (key == "maxLearnedFiles") { lo = 16; hi = 65536; }
    else return bad(key, "unknown setting");
    const n = parseUint(t, lo, hi);
    if (n < 0) return bad(key, "must be a whole number from " + lo.toString() + " to " + hi.toString());
    if (key == "retryAfterSeconds") c.retryAfterSeconds = <u32>n;
    else if (key == "staleAfterMs") c.staleAfterMs = <u64>n;
    else if (key == "viewRefreshMs") c.viewRefreshMs = <u64>n;
    else if (key == "maxSessionIdLength") c.maxSessionIdLength = <i32>n;
    else if (key == "maxInitializeBodyBytes") c.maxInitializeBodyBytes = <i32>n;
    else if (key == "maxBufferedBodyBytes") c.maxBufferedBodyBytes = <i32>n;
    else if (key == "maxCookieBytes") c.maxCookieBytes = <i32>n;
    else if (key == "eventFlushMs") c.eventFlushMs = <u64>n;
    else if (key == "maxSessionEventFiles") c.maxSessionEventFiles = <u32>n;
    else if (key == "maxLearnedFiles") {
      const digits = hexDigitsFor(<u32>n);
      if (digits < 0) return bad(key, "must be 16, 256, 4096 or 65536");
      c.maxLearnedFiles = <u32>n;
      c.learnedDigits = digits;
    }
    else c.maxEventFiles = <u32>n;
  }
  return "";
}

/** Parses the guest config JSON (empty = all defaults). Never traps: errors land in `error`. */
export function parseConfig(json: string): Config {
  const c = new Config();
  const p = new Parser(json);
  p.ws();
  if (p.i >= json.length) return c;
  if (p.peek() != 123) {
    c.error = "mcp-affinity: the middleware configuration is not a JSON object; the plugin passes every request untouched";
    return c;
  }
  p.i++;
  p.ws();
  if (p.peek() == 125) return c;
  while (true) {
    p.ws();
    const key = p.str();
    p.ws();
    if (key == null || p.peek() != 58) {
      c.error = "mcp-affinity: the middleware configuration is not valid JSON; the plugin passes every request untouched";
      return c;
    }
    p.i++;
    p.ws();
    const v = p.scalar();
    if (v == null) {
      c.error = bad(key, "is not valid JSON");
      return c;
    }
    const err = applyOne(c, key, v);
    if (err.length > 0) {
      c.error = err;
      return c;
    }
    p.ws();
    const d = p.peek();
    p.i++;
    if (d == 125) return c;
    if (d != 44) {
      c.error = "mcp-affinity: the middleware configuration is not valid JSON; the plugin passes every request untouched";
      return c;
    }
  }
}

/**
 * ASCII lower case: the settings' words are ASCII. String#toLowerCase would bring the Unicode case
 * tables, about 10 KiB of static data, out of the 64 KiB page an instance has.
 */
function asciiLower(s: string): string {
  const out = new ArrayBuffer(s.length << 1);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    store<u16>(changetype<usize>(out) + (<usize>i << 1), <u16>(c >= 65 && c <= 90 ? c + 32 : c));
  }
  return String.UTF16.decode(out);
}
