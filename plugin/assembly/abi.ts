// The only file that touches the http-wasm ABI. Everything else sees byte buffers and strings.
// Imports: module `http_handler` (see http-wasm-host-go api/handler/wasm.go).
import { Bytes } from "./bytes";

@external("http_handler", "log")
declare function _log(level: i32, buf: usize, len: u32): void;
@external("http_handler", "log_enabled")
declare function _log_enabled(level: i32): u32;
@external("http_handler", "get_config")
declare function _get_config(buf: usize, limit: u32): u32;
@external("http_handler", "enable_features")
declare function _enable_features(features: u32): u32;
@external("http_handler", "get_method")
declare function _get_method(buf: usize, limit: u32): u32;
@external("http_handler", "get_header_values")
declare function _get_header_values(kind: u32, name: usize, nameLen: u32, buf: usize, limit: u32): u64;
@external("http_handler", "set_header_value")
declare function _set_header_value(kind: u32, name: usize, nameLen: u32, value: usize, valueLen: u32): void;
@external("http_handler", "add_header_value")
declare function _add_header_value(kind: u32, name: usize, nameLen: u32, value: usize, valueLen: u32): void;
@external("http_handler", "read_body")
declare function _read_body(kind: u32, buf: usize, limit: u32): u64;
@external("http_handler", "write_body")
declare function _write_body(kind: u32, buf: usize, len: u32): void;
@external("http_handler", "get_status_code")
declare function _get_status_code(): u32;
@external("http_handler", "set_status_code")
declare function _set_status_code(code: u32): void;

export const KIND_REQUEST: u32 = 0;
export const KIND_RESPONSE: u32 = 1;
export const FEATURE_BUFFER_RESPONSE: u32 = 2;

export const LOG_DEBUG: i32 = -1;
export const LOG_INFO: i32 = 0;
export const LOG_WARN: i32 = 1;
export const LOG_ERROR: i32 = 2;

// The text the ABI wrappers pass across the boundary as strings: the configuration (grown once at
// start when larger), the method, and the header values and answer bodies the plugin writes from
// strings. Each wrapper is done with it before it returns, so calls never overlap.
const hostText = new Bytes(512);
const nameBuf = new Bytes(64);

function setName(name: string): void {
  nameBuf.clear();
  nameBuf.pushAscii(name);
}

/** The plugin's own threshold (setting logLevel); the host's logger filters on top of it. */
let minLevel: i32 = LOG_INFO;
export function setLogLevel(level: i32): void {
  minLevel = level;
}

export function logEnabled(level: i32): bool {
  return level >= minLevel && _log_enabled(level) != 0;
}

export function log(level: i32, message: string): void {
  if (!logEnabled(level)) return;
  const b = String.UTF8.encode(message);
  _log(level, changetype<usize>(b), <u32>b.byteLength);
}

/** The guest configuration (JSON) as a string; empty when none was given. */
export function getConfig(): string {
  let n = _get_config(hostText.ptr, <u32>hostText.buf.length);
  if (n > <u32>hostText.buf.length) {
    hostText.ensure(<i32>n);
    n = _get_config(hostText.ptr, <u32>hostText.buf.length);
  }
  return String.UTF8.decodeUnsafe(hostText.ptr, <usize>n);
}

export function enableFeatures(features: u32): u32 {
  return _enable_features(features);
}

/** Request method, upper case as sent. */
export function getMethod(): string {
  let n = _get_method(hostText.ptr, <u32>hostText.buf.length);
  if (n > <u32>hostText.buf.length) {
    hostText.ensure(<i32>n);
    n = _get_method(hostText.ptr, <u32>hostText.buf.length);
  }
  return String.UTF8.decodeUnsafe(hostText.ptr, <usize>n);
}

/**
 * Reads every value of a header into `out` as NUL-terminated values; returns the count, or -1
 * when they take more than `maxLen` bytes. The host writes nothing when the values do not fit:
 * grow and ask again.
 */
export function headerValues(kind: u32, name: string, out: Bytes, maxLen: i32 = i32.MAX_VALUE): i32 {
  setName(name);
  let r = _get_header_values(kind, nameBuf.ptr, <u32>nameBuf.len, out.ptr, <u32>out.buf.length);
  let len = <i32>(r & 0xffffffff);
  if (len > maxLen) {
    out.len = 0;
    return -1;
  }
  if (len > out.buf.length) {
    out.len = 0;
    out.ensure(len);
    r = _get_header_values(kind, nameBuf.ptr, <u32>nameBuf.len, out.ptr, <u32>out.buf.length);
    len = <i32>(r & 0xffffffff);
    if (len > out.buf.length) len = 0; // changed under us: treat as absent
  }
  out.len = len;
  return len == 0 ? 0 : <i32>(r >>> 32);
}

export function setHeader(kind: u32, name: string, value: Bytes): void {
  setName(name);
  _set_header_value(kind, nameBuf.ptr, <u32>nameBuf.len, value.ptr, <u32>value.len);
}

export function addHeader(kind: u32, name: string, value: Bytes): void {
  setName(name);
  _add_header_value(kind, nameBuf.ptr, <u32>nameBuf.len, value.ptr, <u32>value.len);
}

export function addHeaderAscii(kind: u32, name: string, value: string): void {
  hostText.clear();
  hostText.pushAscii(value);
  addHeader(kind, name, hostText);
}

/**
 * Reads the next piece of the request body into `out`, at most its capacity (never grown);
 * true once the body has ended. The host keeps its reader across calls.
 */
export function readRequestChunk(out: Bytes): bool {
  const r = _read_body(KIND_REQUEST, out.ptr, <u32>out.buf.length);
  out.len = <i32>(r & 0xffffffff);
  return (r >>> 32) != 0;
}

/**
 * Reads the request body into `out` only if it fits in `max` bytes: false (with `out` holding a
 * prefix) when it is longer. `out` never grows past max + 1 bytes.
 */
export function readRequestBodyUpTo(out: Bytes, max: i32): bool {
  out.clear();
  out.ensure(max + 1);
  while (true) {
    const room = max + 1 - out.len;
    if (room <= 0) return false;
    const r = _read_body(KIND_REQUEST, out.ptr + <usize>out.len, <u32>room);
    out.len += <i32>(r & 0xffffffff);
    if ((r >>> 32) != 0) return out.len <= max;
  }
}

/**
 * Appends `b` to the request body the next handler gets. The first call replaces the body with an
 * empty in-memory one; later calls append to it (the host keeps its writer across calls).
 */
export function writeRequestBody(b: Bytes): void {
  _write_body(KIND_REQUEST, b.ptr, <u32>b.len);
}

/** readRequestChunk for a buffered response (FEATURE_BUFFER_RESPONSE): the next piece of what the node sent. */
export function readResponseChunk(out: Bytes): bool {
  const r = _read_body(KIND_RESPONSE, out.ptr, <u32>out.buf.length);
  out.len = <i32>(r & 0xffffffff);
  return (r >>> 32) != 0;
}

/**
 * Appends `b` to a buffered response's body. The first call empties the body the node sent (the
 * host keeps reading the original: its reader holds the old bytes), later calls append.
 */
export function writeResponseBody(b: Bytes): void {
  _write_body(KIND_RESPONSE, b.ptr, <u32>b.len);
}

export function statusCode(): u32 {
  return _get_status_code();
}

/** Answers the request from the plugin: headers first, then status (commits headers), then body. */
export function respond(status: u32, reason: string, body: string, retryAfter: u32): void {
  addHeaderAscii(KIND_RESPONSE, "Content-Type", "application/json");
  addHeaderAscii(KIND_RESPONSE, "Mcp-Affinity", reason);
  if (retryAfter > 0) addHeaderAscii(KIND_RESPONSE, "Retry-After", retryAfter.toString());
  _set_status_code(status);
  hostText.clear();
  hostText.pushAscii(body);
  _write_body(KIND_RESPONSE, hostText.ptr, <u32>hostText.len);
}
