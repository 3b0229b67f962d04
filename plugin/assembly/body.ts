// Request bodies: copying a POST body into the host's in-memory body through one fixed buffer, and
// spotting an initialize in it on the way.
//
// Why copy at all: the proxy behind the plugin streams the client's body to the node while the
// node may already answer (an SSE answer starts at once). Go's HTTP/1 server closes the inbound
// body when the response headers go out, and the transport's last read of that body then fails
// and tears the upstream connection down mid-answer. A body the guest wrote back is a bytes.Buffer
// in http-wasm-host-go, which the transport reads to its end without touching the connection
// (docs/architecture.md, "Buffered request bodies").
import { Bytes } from "./bytes";
import { KIND_REQUEST, headerValues, readRequestChunk, writeRequestBody } from "./abi";

/** About the size of the pieces a body is copied in (the caller's buffer: allocated once, never grown). */
export const CHUNK_BYTES: i32 = 4096;

/**
 * Content-Length of the request when it is given once, in decimal, and at most `limit`; -1
 * otherwise (absent, as for chunked bodies, malformed, repeated, or larger). `value` receives the
 * header's value (at most 24 bytes are read).
 */
export function contentLength(value: Bytes, limit: i64): i64 {
  const n = headerValues(KIND_REQUEST, "Content-Length", value, 24);
  if (n != 1) return -1;
  const end = value.len - 1; // NUL-terminated
  if (end <= 0) return -1;
  let len: i64 = 0;
  for (let i = 0; i < end; i++) {
    const c = value.at(i);
    if (c < 48 || c > 57) return -1;
    len = len * 10 + <i64>(c - 48);
    if (len > limit) return -1;
  }
  return len;
}

const KEY = '"method"';
const VALUE = '"initialize"';
const AFTER_KEY: i32 = 8; // KEY.length: whitespace or ':' expected
const AFTER_COLON: i32 = 9; // whitespace or the value's opening quote expected
const FOUND_AT: i32 = AFTER_COLON + 12; // + VALUE.length

@inline function isJsonSpace(c: i32): bool {
  return c == 32 || c == 9 || c == 10 || c == 13;
}

/**
 * Finds `"method"`, optional whitespace, `:`, optional whitespace, `"initialize"` in a body that
 * arrives in pieces: the state carries from one piece to the next, so where the pieces are cut
 * does not matter.
 */
export class InitializeMatcher {
  state: i32 = 0;
  found: bool = false;

  reset(): void {
    this.state = 0;
    this.found = false;
  }

  feed(b: Bytes): void {
    let st = this.state;
    for (let i = 0; i < b.len && !this.found; i++) {
      const c = <i32>b.at(i);
      if (st < AFTER_KEY) {
        st = c == KEY.charCodeAt(st) ? st + 1 : restart(c);
      } else if (st == AFTER_KEY) {
        if (c == 58) st = AFTER_COLON;
        else if (!isJsonSpace(c)) st = restart(c);
      } else if (st == AFTER_COLON) {
        if (c == 34) st = AFTER_COLON + 1;
        else if (!isJsonSpace(c)) st = restart(c);
      } else {
        st = c == VALUE.charCodeAt(st - AFTER_COLON) ? st + 1 : restart(c);
        if (st == FOUND_AT) this.found = true;
      }
    }
    this.state = st;
  }
}

/** A quote may open the key again; anything else starts from nothing. */
@inline function restart(c: i32): i32 {
  return c == 34 ? 1 : 0;
}

/**
 * Reads the request body to its end through `chunk` and writes every piece back, so that the next
 * handler gets an in-memory copy. Feeds the pieces to `matcher` when one is given.
 */
export function copyRequestBody(chunk: Bytes, matcher: InitializeMatcher | null): void {
  while (true) {
    const end = readRequestChunk(chunk);
    if (matcher != null) matcher.feed(chunk);
    if (chunk.len > 0) writeRequestBody(chunk);
    if (end) return;
  }
}
