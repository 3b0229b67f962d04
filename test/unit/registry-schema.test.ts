// The registry's wire formats (lib/registry/schema.ts): a record's JSON is built once, and the
// change messages carry it byte for byte as the record's key holds it.
import { describe, expect, it } from "vitest";
import {
  decodeChange,
  decodeNode,
  decodeSession,
  encodeChange,
  encodeNode,
  encodeSession,
  type NodeRecord,
  type RegistryChange,
  type SessionRecord,
} from "../../lib/registry/schema.ts";

const session: SessionRecord = {
  node: "http://10.0.0.1:3000",
  cookie: "0123456789abcdef",
  boot: null,
  created: 1700000000000,
  source: "edge",
};
const node: NodeRecord = {
  url: "http://10.0.0.1:3000",
  cookie: "0123456789abcdef",
  boot: "b1",
  name: "a",
  state: "up",
  seen: 1700000000001,
};

describe("registry wire formats", () => {
  it("writes each record in one layout, alone and inside a change", () => {
    const s =
      '{"v":1,"node":"http://10.0.0.1:3000","cookie":"0123456789abcdef","boot":null,"created":1700000000000,"source":"edge"}';
    const n =
      '{"v":1,"url":"http://10.0.0.1:3000","cookie":"0123456789abcdef","boot":"b1","name":"a","state":"up","seen":1700000000001}';
    expect(encodeSession(session)).toBe(s);
    expect(encodeNode(node)).toBe(n);
    expect(encodeChange({ op: "session", id: "s1", record: session })).toBe(
      `{"v":1,"op":"session","id":"s1","record":${s}}`,
    );
    expect(encodeChange({ op: "node", cookie: node.cookie, record: node })).toBe(
      `{"v":1,"op":"node","cookie":"0123456789abcdef","record":${n}}`,
    );
    expect(encodeChange({ op: "node", cookie: node.cookie, record: null })).toBe(
      '{"v":1,"op":"node","cookie":"0123456789abcdef","record":null}',
    );
    expect(encodeChange({ op: "close", id: "s1" })).toBe('{"v":1,"op":"close","id":"s1"}');
  });
  it("reads back what it writes", () => {
    expect(decodeSession(encodeSession(session))).toEqual(session);
    expect(decodeNode(encodeNode(node))).toEqual(node);
    const changes: RegistryChange[] = [
      { op: "session", id: "s1", record: session },
      { op: "close", id: "s1" },
      { op: "node", cookie: node.cookie, record: node },
      { op: "node", cookie: node.cookie, record: null },
    ];
    for (const c of changes) expect(decodeChange(encodeChange(c))).toEqual(c);
  });
  it("refuses a change whose record is missing or malformed", () => {
    for (const raw of [
      '{"v":1,"op":"session","id":"s1"}',
      '{"v":1,"op":"session","id":"s1","record":"x"}',
      '{"v":1,"op":"session","id":"s1","record":{"node":"u","cookie":"nothex","source":"node"}}',
      '{"v":1,"op":"node","cookie":"0123456789abcdef","record":{"url":"u"}}',
      "{broken",
    ])
      expect(() => decodeChange(raw), raw).toThrow(expect.objectContaining({ code: "ERR_REGISTRY_SCHEMA" }));
  });
});
