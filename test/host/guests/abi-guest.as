// AssemblyScript test guest for the host's ABI self-test (test/unit/host-abi.test.ts).
// Compiled at test time with the asc API. Each request names an operation in `X-Op`; the guest
// reports what the host gave it in its own response body (or lets the host trap).

@external("http_handler", "log") declare function log(level: i32, buf: usize, len: u32): void;
@external("http_handler", "log_enabled") declare function log_enabled(level: i32): u32;
@external("http_handler", "get_config") declare function get_config(buf: usize, limit: u32): u32;
@external("http_handler", "enable_features") declare function enable_features(f: u32): u32;
@external("http_handler", "get_method") declare function get_method(buf: usize, limit: u32): u32;
@external("http_handler", "set_method") declare function set_method(buf: usize, len: u32): void;
@external("http_handler", "get_uri") declare function get_uri(buf: usize, limit: u32): u32;
@external("http_handler", "set_uri") declare function set_uri(buf: usize, len: u32): void;
@external("http_handler", "get_protocol_version") declare function get_protocol_version(buf: usize, limit: u32): u32;
@external("http_handler", "get_source_addr") declare function get_source_addr(buf: usize, limit: u32): u32;
@external("http_handler", "get_header_names") declare function get_header_names(kind: u32, buf: usize, limit: u32): u64;
@external("http_handler", "get_header_values") declare function get_header_values(kind: u32, name: usize, nameLen: u32, buf: usize, limit: u32): u64;
@external("http_handler", "set_header_value") declare function set_header_value(kind: u32, name: usize, nameLen: u32, value: usize, valueLen: u32): void;
@external("http_handler", "add_header_value") declare function add_header_value(kind: u32, name: usize, nameLen: u32, value: usize, valueLen: u32): void;
@external("http_handler", "remove_header") declare function remove_header(kind: u32, name: usize, nameLen: u32): void;
@external("http_handler", "read_body") declare function read_body(kind: u32, buf: usize, limit: u32): u64;
@external("http_handler", "write_body") declare function write_body(kind: u32, buf: usize, len: u32): void;
@external("http_handler", "get_status_code") declare function get_status_code(): u32;
@external("http_handler", "set_status_code") declare function set_status_code(code: u32): void;
@external("wasi_snapshot_preview1", "clock_time_get") declare function clock_time_get(id: u32, precision: u64, out: usize): u16;
@external("wasi_snapshot_preview1", "random_get") declare function random_get(buf: usize, len: usize): u16;
@external("wasi_snapshot_preview1", "proc_exit") declare function proc_exit(code: u32): void;

function myAbort(m: string | null, f: string | null, l: u32, c: u32): void {
  unreachable();
}

const BUF: usize = memory.data(65536);
const BUF_SIZE: u32 = 65536;
const OUT: usize = memory.data(16);

function enc(s: string): ArrayBuffer {
  return String.UTF8.encode(s);
}
function p(b: ArrayBuffer): usize {
  return changetype<usize>(b);
}
function n(b: ArrayBuffer): u32 {
  return <u32>b.byteLength;
}
function dec(ptr: usize, len: u32): string {
  return String.UTF8.decodeUnsafe(ptr, len);
}
/** NUL-separated values -> "a|b|c". */
function joinNul(ptr: usize, len: u32): string {
  let out = "";
  let start: u32 = 0;
  for (let i: u32 = 0; i < len; i++) {
    if (load<u8>(ptr + i) == 0) {
      out += (out.length > 0 || start > 0 ? "|" : "") + dec(ptr + start, i - start);
      start = i + 1;
    }
  }
  return out;
}
function fill(ptr: usize, len: u32, v: u8): void {
  memory.fill(ptr, v, len);
}
function untouched(ptr: usize, len: u32, v: u8): bool {
  for (let i: u32 = 0; i < len; i++) if (load<u8>(ptr + i) != v) return false;
  return true;
}
function header(kind: u32, name: string): string {
  const nm = enc(name);
  const r = get_header_values(kind, p(nm), n(nm), BUF, BUF_SIZE);
  return joinNul(BUF, <u32>(r & 0xffffffff));
}
function setH(kind: u32, name: string, value: string): void {
  const a = enc(name);
  const b = enc(value);
  set_header_value(kind, p(a), n(a), p(b), n(b));
}
function addH(kind: u32, name: string, value: string): void {
  const a = enc(name);
  const b = enc(value);
  add_header_value(kind, p(a), n(a), p(b), n(b));
}
function answer(status: u32, body: string): u64 {
  const ct = enc("Content-Type");
  const tp = enc("text/plain");
  set_header_value(1, p(ct), n(ct), p(tp), n(tp));
  set_status_code(status);
  const b = enc(body);
  write_body(1, p(b), n(b));
  return 0;
}
function hex(ptr: usize, len: u32): string {
  let s = "";
  for (let i: u32 = 0; i < len; i++) {
    const v = load<u8>(ptr + i);
    s += (v < 16 ? "0" : "") + v.toString(16);
  }
  return s;
}

// _start: behaviour chosen by the config text.
let startFeatures: u32 = 0;
const cfgLen = get_config(BUF, BUF_SIZE);
const cfgText = dec(BUF, cfgLen);
if (cfgText == "exit") proc_exit(3);
if (cfgText == "buffer-at-start") startFeatures = enable_features(2);
let requests: i32 = 0;

export function handle_request(): u64 {
  requests++;
  const op = header(0, "X-Op");
  if (op == "config-retry") {
    fill(BUF, 64, 0xaa);
    const first = get_config(BUF, 4);
    const ok = untouched(BUF, 64, 0xaa);
    const second = get_config(BUF, first);
    return answer(200, "first=" + first.toString() + " untouched=" + (ok ? "1" : "0") + " second=" + second.toString() + " cfg=" + dec(BUF, second));
  }
  if (op == "names-retry") {
    fill(BUF, 256, 0xaa);
    const r = get_header_names(0, BUF, 8);
    const ok = untouched(BUF, 256, 0xaa);
    const count = <u32>(r >> 32);
    const len = <u32>(r & 0xffffffff);
    const r2 = get_header_names(0, BUF, len);
    return answer(200, "count=" + count.toString() + " len=" + len.toString() + " untouched=" + (ok ? "1" : "0") + " same=" + (r2 == r ? "1" : "0") + " names=" + joinNul(BUF, len));
  }
  if (op == "values-retry") {
    const nm = enc("x-multi");
    fill(BUF, 256, 0xaa);
    const r = get_header_values(0, p(nm), n(nm), BUF, 3);
    const ok = untouched(BUF, 256, 0xaa);
    const len = <u32>(r & 0xffffffff);
    const r2 = get_header_values(0, p(nm), n(nm), BUF, len);
    const missing = enc("X-Missing");
    const r3 = get_header_values(0, p(missing), n(missing), BUF + 1024, 100);
    return answer(200, "count=" + (<u32>(r >> 32)).toString() + " len=" + len.toString() + " untouched=" + (ok ? "1" : "0") + " same=" + (r2 == r ? "1" : "0") + " values=" + joinNul(BUF, len) + " missing=" + r3.toString() + " host=" + header(0, "Host"));
  }
  if (op == "resp-names") {
    addH(1, "X-B", "2");
    addH(1, "x-a", "1");
    const r = get_header_names(1, BUF, BUF_SIZE);
    return answer(200, joinNul(BUF, <u32>(r & 0xffffffff)));
  }
  if (op == "body-read") {
    let out = "";
    for (let i = 0; i < 10; i++) {
      const r = read_body(0, BUF, 5);
      out += (i > 0 ? "," : "") + (<u32>(r & 0xffffffff)).toString() + ":" + (<u32>(r >> 32)).toString();
      if (r >> 32) break;
    }
    addH(1, "X-Reads", out);
    return 1; // body not written back: the upstream gets what is left
  }
  if (op == "body-echo") {
    let total: u32 = 0;
    for (;;) {
      const r = read_body(0, BUF + total, 7);
      total += <u32>(r & 0xffffffff);
      if (r >> 32) break;
    }
    write_body(0, BUF, total);
    return 1;
  }
  if (op == "body-replace") {
    const b = enc("replaced");
    write_body(0, p(b), n(b));
    return 1;
  }
  if (op == "read-body-zero") {
    read_body(0, BUF, 0);
    return 1;
  }
  if (op == "set-req-header-after-next") return (<u64>1 << 32) | 1;
  if (op == "set-status-after-next") return (<u64>2 << 32) | 1;
  if (op == "read-resp-body-nobuf") return (<u64>3 << 32) | 1;
  if (op == "buffer-rewrite") {
    addH(1, "X-Enabled", enable_features(2).toString());
    return (<u64>4 << 32) | 1;
  }
  if (op == "set-resp-header-after-next") return (<u64>5 << 32) | 1;
  if (op == "read-resp-headers-after-next") return (<u64>6 << 32) | 1;
  if (op == "features") return answer(200, "features=" + enable_features(0).toString() + " start=" + startFeatures.toString());
  if (op == "answer-late-header") {
    set_status_code(202);
    addH(1, "X-Late", "1");
    const b = enc("late");
    write_body(1, p(b), n(b));
    return 0;
  }
  if (op == "leak") return (<u64>7 << 32) | 0;
  if (op == "get-status-nobuf") {
    get_status_code();
    return 1;
  }
  if (op == "request-line") {
    let out = "";
    let l = get_method(BUF, BUF_SIZE);
    out += dec(BUF, l);
    l = get_uri(BUF, BUF_SIZE);
    out += " " + dec(BUF, l);
    l = get_protocol_version(BUF, BUF_SIZE);
    out += " " + dec(BUF, l);
    l = get_source_addr(BUF, BUF_SIZE);
    out += " " + dec(BUF, l);
    const short = get_uri(BUF, 2);
    out += " short=" + short.toString();
    const m = enc("PUT");
    set_method(p(m), n(m));
    const u = enc("/rewritten?x=1");
    set_uri(p(u), n(u));
    addH(1, "X-Seen", out);
    return 1;
  }
  if (op == "log") {
    const m = enc("hello from the guest");
    log(1, p(m), n(m));
    return answer(200, "debug=" + log_enabled(-1).toString());
  }
  if (op == "crlf") {
    setH(0, "X-Bad", "a\r\nInjected: 1");
    return 1;
  }
  if (op == "oob") {
    get_header_names(0, <usize>(memory.size() << 16) - 2, 1000);
    return 1;
  }
  if (op == "trap") {
    unreachable();
  }
  if (op == "cookie-set") {
    setH(0, "Cookie", "only=1");
    return 1;
  }
  if (op == "remove-header") {
    const a = enc("X-Drop");
    remove_header(0, p(a), n(a));
    return 1;
  }
  if (op == "add-resp-before-next") {
    addH(1, "Set-Cookie", "guest=1");
    return 1;
  }
  if (op == "empty-name") {
    const v = enc("v");
    set_header_value(0, 0, 0, p(v), n(v));
    return 1;
  }
  if (op == "clock") {
    clock_time_get(1, 0, OUT);
    const m1 = load<u64>(OUT);
    clock_time_get(1, 0, OUT);
    const m2 = load<u64>(OUT);
    clock_time_get(0, 0, OUT);
    const wall = load<u64>(OUT) / 1000000;
    const bad = clock_time_get(2, 0, OUT);
    random_get(OUT, 8);
    return answer(200, "mono=" + (m2 - m1).toString() + " wall=" + wall.toString() + " cpu=" + bad.toString() + " rand=" + hex(OUT, 8) + " requests=" + requests.toString());
  }
  return answer(404, "unknown op " + op);
}

export function handle_response(reqCtx: u32, isError: u32): void {
  if (reqCtx == 1) setH(0, "X-Late", "1");
  else if (reqCtx == 2) set_status_code(299);
  else if (reqCtx == 3) read_body(1, BUF, 100);
  else if (reqCtx == 4) {
    const status = get_status_code();
    const r = read_body(1, BUF, BUF_SIZE);
    const orig = dec(BUF, <u32>(r & 0xffffffff));
    set_status_code(201);
    setH(1, "X-Rewritten", status.toString() + "/" + (<u32>(r >> 32)).toString() + "/" + isError.toString());
    const b = enc("rewritten:" + orig);
    write_body(1, p(b), n(b));
  } else if (reqCtx == 5) setH(1, "X-After", "1");
  else if (reqCtx == 6) {
    // Reading response headers after next is allowed without buffering; keep the value in memory.
    const v = header(1, "X-Upstream");
    if (v != "u") unreachable();
  }
}
