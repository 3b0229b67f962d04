// The built plugin/build/plugin.wasm itself: what it imports, what it exports, with which exact
// signatures (read from the binary's type section), and that the host accepts it as Traefik would.
import { describe, expect, test } from "vitest";
import { readFileSync } from "node:fs";
import { compileGuest } from "../host/http-wasm-host.ts";
import { readWasm, sig } from "../host/wasm-binary.ts";
import {
  PASSTHROUGH_WASM,
  PLUGIN_WASM,
  makeViewDir,
  mcp,
  newPlugin,
  passthroughWasm,
} from "../support/plugin-fixture.ts";

describe.each([
  ["plugin.wasm", PLUGIN_WASM],
  ["passthrough.wasm", PASSTHROUGH_WASM],
])("%s", (_name, path) => {
  const bytes = readFileSync(path);
  const info = readWasm(bytes);
  const mod = new WebAssembly.Module(bytes);

  test("imports only from http_handler and wasi_snapshot_preview1: no env, no sockets", () => {
    const imports = WebAssembly.Module.imports(mod);
    expect(imports.length).toBeGreaterThan(0);
    for (const i of imports) {
      expect(["http_handler", "wasi_snapshot_preview1"], `${i.module}.${i.name}`).toContain(i.module);
      expect(i.kind).toBe("function");
      expect(i.name).not.toMatch(/^sock_/);
    }
    // The binary reader and the engine agree on the import list.
    expect(info.imports.map((i) => `${i.module}.${i.name}`)).toEqual(imports.map((i) => `${i.module}.${i.name}`));
  });

  test("exports handle_request ()->i64, handle_response (i32,i32)->(), memory, _start; no _initialize", () => {
    const exports = Object.fromEntries(info.exports.map((e) => [e.name, e.kind === "function" ? sig(e.type) : e.kind]));
    expect(exports.handle_request).toBe("()->(i64)");
    expect(exports.handle_response).toBe("(i32,i32)->()");
    expect(exports.memory).toBe("memory");
    expect(exports._start).toBe("()->()");
    expect(exports._initialize).toBeUndefined();
    expect(
      WebAssembly.Module.exports(mod)
        .map((e) => e.name)
        .sort(),
    ).toEqual(info.exports.map((e) => e.name).sort());
  });

  test("host-side http_handler imports have the ABI's signatures", () => {
    const want: Record<string, string> = {
      log: "(i32,i32,i32)->()",
      log_enabled: "(i32)->(i32)",
      get_config: "(i32,i32)->(i32)",
      enable_features: "(i32)->(i32)",
      get_method: "(i32,i32)->(i32)",
      set_method: "(i32,i32)->()",
      get_uri: "(i32,i32)->(i32)",
      set_uri: "(i32,i32)->()",
      get_protocol_version: "(i32,i32)->(i32)",
      get_source_addr: "(i32,i32)->(i32)",
      get_header_names: "(i32,i32,i32)->(i64)",
      get_header_values: "(i32,i32,i32,i32,i32)->(i64)",
      set_header_value: "(i32,i32,i32,i32,i32)->()",
      add_header_value: "(i32,i32,i32,i32,i32)->()",
      remove_header: "(i32,i32,i32)->()",
      read_body: "(i32,i32,i32)->(i64)",
      write_body: "(i32,i32,i32)->()",
      get_status_code: "()->(i32)",
      set_status_code: "(i32)->()",
    };
    for (const i of info.imports.filter((x) => x.module === "http_handler"))
      expect(sig(i.type), i.name).toBe(want[i.name]);
  });

  test("no start section (wazero would run it before _start, outside any request)", () => {
    expect(info.startFunction).toBeUndefined();
  });

  test("accepted by the host's compileGuest checks", () => {
    expect(() => compileGuest(bytes)).not.toThrow();
  });
});

test("instantiating and starting the plugin does not call proc_exit and logs nothing", () => {
  const t = makeViewDir();
  try {
    const p = newPlugin({ dir: t.dir });
    expect(p.pool.instances[0]!.closed).toBeUndefined();
    const ex = p.handle(mcp({}), () => ({ status: 200 }));
    expect(ex.trap).toBeUndefined();
    expect(p.pool.logs).toEqual([]);
  } finally {
    t.cleanup();
  }
});

test("the pass-through baseline passes everything untouched", () => {
  const p = newPlugin({ wasm: passthroughWasm() });
  const ex = p.handle(mcp({ sessionId: "whatever", cookie: "_mcp_backend=0123456789abcdef" }), () => ({ status: 204 }));
  expect(ex.nextCalled).toBe(true);
  expect(ex.headerWrites).toEqual([]);
  expect(ex.response.status).toBe(204);
});
