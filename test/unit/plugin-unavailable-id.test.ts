// The edge 503 names the request it answers: a single JSON-RPC request's id goes into the error
// body (clients match errors to requests by id); everything else keeps "id": null. Through the
// built plugin.wasm on the fake http-wasm host.
import { describe, expect, test } from "vitest";
import { CLUSTER_VIEW, mcp, newPlugin } from "../support/plugin-fixture.ts";
import { useView } from "../support/use-view.ts";

const t = useView(CLUSTER_VIEW);
const HEAD =
  '{"jsonrpc":"2.0","error":{"code":-32000,"message":"The node holding this session is temporarily unavailable; retry later"},"id":';

function answer503(req: Parameters<typeof mcp>[0]): string {
  const ex = newPlugin({ dir: t.dir }).handle(mcp({ sessionId: "s-down", ...req }), () => {
    throw new Error("an answered request must not reach the upstream");
  });
  expect(ex.trap).toBeUndefined();
  expect(ex.nextCalled).toBe(false);
  expect(ex.response.status).toBe(503);
  expect(ex.response.headers.values("Retry-After")).toHaveLength(1);
  const text = Buffer.from(ex.response.body).toString("latin1");
  expect(text.startsWith(HEAD)).toBe(true);
  JSON.parse(Buffer.from(text, "latin1").toString("utf8")); // always one valid JSON document
  return text.slice(HEAD.length, -1);
}

describe("edge 503 body: the request's JSON-RPC id", () => {
  test.each([
    ["integer id", '{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"counter"}}', "7"],
    [
      "id after method and params",
      '{"jsonrpc":"2.0","method":"tools/call","params":{"id":99,"x":[1,{"id":3}]},"id":12}',
      "12",
    ],
    ["string id", '{"jsonrpc":"2.0","id":"req-1","method":"ping"}', '"req-1"'],
    ["string id with escapes", '{"jsonrpc":"2.0","id":"a\\"b\\\\c\\u00e9","method":"ping"}', '"a\\"b\\\\c\\u00e9"'],
    ["whitespace everywhere", ' \n{ "id" :\t-3.5e2 , "method" : "ping" , "jsonrpc" : "2.0" }\r\n', "-3.5e2"],
    ["UTF-8 in the id", JSON.stringify({ jsonrpc: "2.0", id: "ключ", method: "ping" }), JSON.stringify("ключ")],
  ])("%s", (_name, body, id) => {
    expect(Buffer.from(answer503({ body }), "latin1").toString("utf8")).toBe(id);
  });

  test.each([
    ["a batch", '[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"ping"}]'],
    ["a notification", '{"jsonrpc":"2.0","method":"notifications/initialized"}'],
    ["a response (no method)", '{"jsonrpc":"2.0","id":5,"result":{}}'],
    ["id null", '{"jsonrpc":"2.0","id":null,"method":"ping"}'],
    ["id an object", '{"jsonrpc":"2.0","id":{"x":1},"method":"ping"}'],
    ["id true", '{"jsonrpc":"2.0","id":true,"method":"ping"}'],
    ["two ids", '{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}'],
    ["malformed number", '{"jsonrpc":"2.0","id":01x,"method":"ping"}'],
    ["bad escape", '{"jsonrpc":"2.0","id":"a\\qb","method":"ping"}'],
    ["control byte in the id", '{"jsonrpc":"2.0","id":"a\u0001b","method":"ping"}'],
    ["unterminated", '{"jsonrpc":"2.0","id":1,"method":"ping"'],
    ["trailing bytes", '{"jsonrpc":"2.0","id":1,"method":"ping"}{"id":2}'],
    ["an id longer than 128 bytes", JSON.stringify({ jsonrpc: "2.0", id: "x".repeat(200), method: "ping" })],
    [
      "a body larger than the fixed buffer",
      JSON.stringify({ jsonrpc: "2.0", id: 4, method: "tools/call", params: { pad: "p".repeat(5000) } }),
    ],
    ["not JSON", "id=3&method=ping"],
    ["empty", ""],
  ])("%s: id null", (_name, body) => {
    expect(answer503({ body })).toBe("null");
  });

  test("GET and DELETE: id null (no body is read)", () => {
    expect(answer503({ method: "GET" })).toBe("null");
    expect(answer503({ method: "DELETE" })).toBe("null");
  });

  test("the 404 stays byte-identical to the official TypeScript server's, whatever the body", () => {
    const ex = newPlugin({ dir: t.dir }).handle(
      mcp({ sessionId: "s-gone", body: '{"jsonrpc":"2.0","id":7,"method":"ping"}' }),
    );
    expect(ex.response.status).toBe(404);
    expect(Buffer.from(ex.response.body).toString("latin1")).toBe(
      '{"jsonrpc":"2.0","error":{"code":-32001,"message":"Session not found"},"id":null}',
    );
  });
});
