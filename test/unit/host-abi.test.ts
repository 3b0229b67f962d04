// Self-test of the fake http-wasm host (test/host): the packing, retry, phase and trap rules of
// http-wasm-host-go v0.7.0 (handler/middleware.go, handler/nethttp) that the plugin tests rely on,
// driven by a small AssemblyScript guest compiled at test time.
import { beforeAll, describe, expect, test } from "vitest";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { compileAsGuest } from "../host/compile-guest.ts";
import {
  HostPool,
  OffsetClock,
  compileGuest,
  type Exchange,
  type HostRequestInit,
  type NextHandler,
} from "../host/http-wasm-host.ts";
import { goJsonMarshal, canonicalHeaderKey } from "../host/go-http.ts";
import { readWasm, sig } from "../host/wasm-binary.ts";

const GUEST = join(fileURLToPath(new URL(".", import.meta.url)), "..", "host", "guests", "abi-guest.as");
let guest: WebAssembly.Module;

beforeAll(async () => {
  guest = new WebAssembly.Module((await compileAsGuest(GUEST)) as Uint8Array<ArrayBuffer>);
}, 60_000);

const op = (name: string, extra: Partial<HostRequestInit> = {}): HostRequestInit => ({
  method: "GET",
  uri: "/mcp?q=1",
  host: "edge.test",
  ...extra,
  headers: [["X-Op", name], ...((extra.headers as [string, string][]) ?? [])],
});
const up: NextHandler = () => ({ status: 200, headers: [["X-Upstream", "u"]], body: "orig" });
const pool = (config?: unknown, size = 1, clock?: OffsetClock) => new HostPool({ wasm: guest, config, clock }, size);
const text = (ex: Exchange) => ex.response.text();

describe("module checks (compileGuest)", () => {
  // A hand-assembled module: handle_request with a chosen result type, handle_response, memory.
  function module(o: { hrResult: number; memory: boolean; envImport?: boolean }): Uint8Array {
    const vec = (items: number[][]) => [items.length, ...items.flat()];
    const name = (s: string) => [s.length, ...Buffer.from(s)];
    const section = (id: number, content: number[]) => [id, content.length, ...content];
    const types = section(
      1,
      vec([
        [0x60, 0, 1, o.hrResult],
        [0x60, 2, 0x7f, 0x7f, 0],
      ]),
    );
    const imports = o.envImport ? section(2, vec([[...name("env"), ...name("abort"), 0, 1]])) : [];
    const base = o.envImport ? 1 : 0;
    const funcs = section(3, vec([[0], [1]]));
    const mem = o.memory ? section(5, vec([[0, 1]])) : [];
    const exp = [
      [...name("handle_request"), 0, base],
      [...name("handle_response"), 0, base + 1],
    ];
    if (o.memory) exp.push([...name("memory"), 2, 0]);
    const exports = section(7, vec(exp));
    const zero = o.hrResult === 0x7e ? [0x42, 0] : [0x41, 0];
    const code = section(
      10,
      vec([
        [2 + zero.length, 0, ...zero, 0x0b],
        [2, 0, 0x0b],
      ]),
    );
    return Uint8Array.from([
      0,
      0x61,
      0x73,
      0x6d,
      1,
      0,
      0,
      0,
      ...types,
      ...imports,
      ...funcs,
      ...mem,
      ...exports,
      ...code,
    ]);
  }

  test("accepts the exact signatures and reads them back", () => {
    const bytes = module({ hrResult: 0x7e, memory: true });
    expect(() => compileGuest(bytes)).not.toThrow();
    const info = readWasm(bytes);
    expect(info.exports.map((e) => `${e.name}:${e.kind}:${sig(e.type)}`)).toEqual([
      "handle_request:function:()->(i64)",
      "handle_response:function:(i32,i32)->()",
      "memory:memory:?",
    ]);
  });
  test("rejects a wrong handle_request signature and a missing memory, like wazero's compileGuest", () => {
    expect(() => compileGuest(module({ hrResult: 0x7f, memory: true }))).toThrow(
      "wrong signature for func[handle_request]",
    );
    expect(() => compileGuest(module({ hrResult: 0x7e, memory: false }))).toThrow("doesn't export memory[memory]");
  });
  test("an env import cannot be linked (the host instantiates only http_handler and WASI)", () => {
    const bytes = module({ hrResult: 0x7e, memory: true, envImport: true });
    expect(readWasm(bytes).imports).toEqual([
      { module: "env", name: "abort", kind: "function", type: { params: ["i32", "i32"], results: [] } },
    ]);
    expect(() => new HostPool({ wasm: bytes })).toThrow("module[env] not instantiated");
  });
});

describe("Go semantics helpers", () => {
  test("config is marshalled like Go's json.Marshal: keys sorted, HTML characters escaped", () => {
    expect(goJsonMarshal({ b: "2", a: 1, c: { z: true, y: null } })).toBe('{"a":1,"b":"2","c":{"y":null,"z":true}}');
    expect(goJsonMarshal({ x: "<&>\u2028" })).toBe('{"x":"\\u003c\\u0026\\u003e\\u2028"}');
  });
  test("header names are canonicalised like textproto", () => {
    expect(canonicalHeaderKey("mcp-session-id")).toBe("Mcp-Session-Id");
    expect(canonicalHeaderKey("COOKIE")).toBe("Cookie");
    expect(canonicalHeaderKey("bad name")).toBe("bad name");
  });
});

describe("http_handler ABI", () => {
  test("get_config: length returned, nothing written when it exceeds the limit, retry succeeds", () => {
    const cfg = goJsonMarshal({ b: "2", a: 1 });
    const ex = pool({ b: "2", a: 1 }).handle(op("config-retry"));
    expect(text(ex)).toBe(`first=${cfg.length} untouched=1 second=${cfg.length} cfg=${cfg}`);
  });

  test("get_header_names: count<<32|len, NUL-terminated, sorted, lower-cased, Host included; nothing written when short", () => {
    const ex = pool().handle(
      op("names-retry", {
        headers: [
          ["accept", "*/*"],
          ["X-Multi", "1"],
        ],
      }),
    );
    const names = ["accept", "host", "x-multi", "x-op"];
    const len = names.join("").length + names.length;
    expect(text(ex)).toBe(`count=4 len=${len} untouched=1 same=1 names=${names.join("|")}`);
  });

  test("get_header_values: every line of a repeated header, case-insensitive name; missing -> 0; Host from r.Host", () => {
    const ex = pool().handle(
      op("values-retry", {
        headers: [
          ["X-MULTI", "a"],
          ["x-multi", "bb"],
        ],
      }),
    );
    expect(text(ex)).toBe("count=2 len=5 untouched=1 same=1 values=a|bb missing=0 host=edge.test");
  });

  test("response header names are sorted canonical names, lower-cased", () => {
    expect(text(pool().handle(op("resp-names")))).toBe("x-a|x-b");
  });

  test("read_body packs eof<<32|len; a Content-Length body reports EOF with its last bytes", () => {
    const p = pool();
    let ex = p.handle(op("body-read", { method: "POST", body: "0123456789abc" }), up);
    expect(ex.response.header("X-Reads")).toBe("5:0,5:0,3:1");
    // Not written back: the upstream gets nothing, and Go's transport would refuse the length.
    expect(ex.forwarded!.body.length).toBe(0);
    expect(ex.violations.join()).toContain("Content-Length says 13");
    ex = p.handle(op("body-read", { method: "POST", body: "0123456789" }), up);
    expect(ex.response.header("X-Reads")).toBe("5:0,5:1");
    // A chunked body has no EOF with data: a read that exactly fills the buffer is not the last.
    ex = p.handle(op("body-read", { method: "POST", body: "0123456789", chunked: true }), up);
    expect(ex.response.header("X-Reads")).toBe("5:0,5:0,0:1");
    expect(ex.violations).toEqual([]);
  });

  test("read then write_body(request) hands the upstream the same bytes; a replacement is seen as is", () => {
    const p = pool();
    const body = JSON.stringify({ method: "initialize", pad: "x".repeat(100) });
    let ex = p.handle(op("body-echo", { method: "POST", body }), up);
    expect(Buffer.from(ex.forwarded!.body).toString()).toBe(body);
    expect(ex.violations).toEqual([]);
    ex = p.handle(op("body-replace", { method: "POST", body: "0123456789" }), up);
    expect(Buffer.from(ex.forwarded!.body).toString()).toBe("replaced");
    expect(ex.violations.join()).toContain("Content-Length says 10");
  });

  test("read_body with limit 0 traps -> 500 with the panic text", () => {
    const ex = pool().handle(op("read-body-zero", { method: "POST", body: "x" }), up);
    expect(ex.nextCalled).toBe(false);
    expect(ex.response.status).toBe(500);
    expect(text(ex)).toContain("buf_limit==0 reading body");
  });

  test.each([
    ["set-req-header-after-next", "can't set request header after next handler"],
    ["set-status-after-next", "can't set status code after next handler unless buffer_response is enabled"],
    ["read-resp-body-nobuf", "can't read response body after next handler unless buffer_response is enabled"],
    ["set-resp-header-after-next", "can't set response header after next handler unless buffer_response is enabled"],
  ])("phase rule: %s traps in handle_response", (name, message) => {
    const ex = pool().handle(op(name), up);
    expect(ex.nextCalled).toBe(true);
    expect(ex.responseTrap?.message).toBe(message);
    // The upstream's response already went out unbuffered.
    expect(ex.response.status).toBe(200);
    expect(text(ex)).toBe("orig");
  });

  test("reading response headers after next is allowed without buffer_response", () => {
    const ex = pool().handle(op("read-resp-headers-after-next"), up);
    expect(ex.responseTrap).toBeUndefined();
  });

  test("buffer_response enabled in handle_request: status, headers and body rewritable after next, for that request only", () => {
    const p = pool();
    const ex = p.handle(op("buffer-rewrite"), up);
    expect(ex.responseBuffered).toBe(true);
    expect(ex.response.status).toBe(201);
    expect(ex.response.header("X-Enabled")).toBe("2");
    expect(ex.response.header("X-Rewritten")).toBe("200/1/0");
    expect(text(ex)).toBe("rewritten:orig");
    const after = p.handle(op("features"));
    expect(text(after)).toBe("features=0 start=0");
    expect(after.responseBuffered).toBe(false);
  });

  test("an upstream failure reaches handle_response as isError=1", () => {
    const ex = pool().handle(op("buffer-rewrite"), () => {
      throw new Error("dial tcp: connection refused");
    });
    expect(ex.response.header("X-Rewritten")).toBe("200/1/1");
  });

  test("features enabled in _start apply to every request", () => {
    const p = pool("buffer-at-start");
    const ex = p.handle(op("features"));
    expect(text(ex)).toBe("features=2 start=2");
    expect(ex.responseBuffered).toBe(true);
  });

  test("set_status_code commits headers at once (unbuffered): a later header is not sent", () => {
    const ex = pool().handle(op("answer-late-header"));
    expect(ex.response.status).toBe(202);
    expect(ex.response.header("X-Late")).toBeUndefined();
    expect(text(ex)).toBe("late");
  });

  test("next=0 with a non-zero reqCtx is flagged (the real host leaks the instance)", () => {
    const ex = pool().handle(op("leak"), up);
    expect(ex.nextCalled).toBe(false);
    expect(ex.violations.join()).toContain("non-zero reqCtx");
  });

  test("get_status_code without buffer_response traps (nethttp type assertion)", () => {
    const ex = pool().handle(op("get-status-nobuf"));
    expect(ex.response.status).toBe(500);
    expect(ex.trap?.message).toContain("bufferingResponseWriter");
  });

  test("method, URI, protocol, source address; set_method/set_uri reach the upstream; short buffer returns the length", () => {
    const ex = pool().handle(op("request-line"), up);
    expect(ex.response.header("X-Seen")).toBe("GET /mcp?q=1 HTTP/1.1 127.0.0.1:40000 short=8");
    expect(ex.forwarded!.method).toBe("PUT");
    expect(ex.forwarded!.uri).toBe("/rewritten?x=1");
  });

  test("log and log_enabled (Traefik's logger enables every level)", () => {
    const p = pool();
    const ex = p.handle(op("log"));
    expect(text(ex)).toBe("debug=1");
    expect(ex.logs).toEqual([{ level: 1, levelName: "warn", message: "hello from the guest" }]);
    expect(p.logs).toHaveLength(1);
  });

  test("a header value with CR/LF written by the guest is flagged", () => {
    const ex = pool().handle(op("crlf"), up);
    expect(ex.violations.join()).toContain("CR, LF or NUL");
    expect(ex.headerWrites).toEqual([{ kind: 0, op: "set", name: "X-Bad", value: "a\r\nInjected: 1" }]);
  });

  test("a buffer outside memory traps; a guest trap is a 500 with its text and the instance lives on", () => {
    const p = pool();
    let ex = p.handle(op("oob"), up);
    expect(ex.response.status).toBe(500);
    expect(text(ex)).toBe("out of memory");
    ex = p.handle(op("trap"), up);
    expect(ex.response.status).toBe(500);
    expect(ex.trap).toBeInstanceOf(WebAssembly.RuntimeError);
    expect(text(ex)).toContain("unreachable");
    ex = p.handle(op("features"));
    expect(ex.response.status).toBe(200);
  });

  test("set_header_value(Cookie) replaces every Cookie line; remove_header; empty name traps", () => {
    const p = pool();
    let ex = p.handle(
      op("cookie-set", {
        headers: [
          ["Cookie", "a=1"],
          ["Cookie", "b=2"],
        ],
      }),
      up,
    );
    expect(ex.forwarded!.cookies).toEqual(["only=1"]);
    ex = p.handle(op("remove-header", { headers: [["X-Drop", "1"]] }), up);
    expect(ex.forwarded!.headers.has("X-Drop")).toBe(false);
    ex = p.handle(op("empty-name"), up);
    expect(ex.trap?.message).toBe("HTTP header name cannot be empty");
  });

  test("a response header added before next is sent along with the upstream's own", () => {
    const ex = pool().handle(op("add-resp-before-next"), () => ({ status: 200, headers: [["Set-Cookie", "up=1"]] }));
    expect(ex.response.headers.values("Set-Cookie")).toEqual(["guest=1", "up=1"]);
  });
});

describe("WASI as wazero configures it in Traefik", () => {
  test("monotonic clock is fake (+1 ms per reading), wall clock is real, CPU clocks unsupported, random_get identical across instances", () => {
    const clock = new OffsetClock();
    clock.offsetMs = 3_600_000;
    const p = pool(undefined, 2, clock);
    const a = text(p.handle(op("clock"), undefined, 0));
    const b = text(p.handle(op("clock"), undefined, 1));
    const fields = (s: string) => Object.fromEntries(s.split(" ").map((kv) => kv.split("=")));
    const fa = fields(a);
    expect(fa.mono).toBe("1000000");
    expect(Math.abs(Number(fa.wall) - (Date.now() + 3_600_000))).toBeLessThan(2_000);
    expect(fa.cpu).toBe("28");
    expect(fields(b).rand).toBe(fa.rand);
    // Memory persists per instance: the request counter of instance 0 grows on its own.
    const again = fields(text(p.handle(op("clock"), undefined, 0)));
    expect(again.requests).toBe("2");
    expect(fields(b).requests).toBe("1");
  });

  test("proc_exit in _start fails the instance creation", () => {
    expect(() => pool("exit")).toThrow("exit_code(3)");
  });
});
