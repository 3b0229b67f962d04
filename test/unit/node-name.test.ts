// What a node is called: one rule (lib/registry/node-name.ts) for the sidecar's labels and names
// and for the name the node library gives itself when it is given none.
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { cookieValueFor, nodeLabel, nodeName } from "../../lib/registry/index.ts";
import { createAffinity, type Affinity } from "../../node/src/index.ts";

const URL_A = "http://127.0.0.1:7998";
const COOKIE_A = cookieValueFor(URL_A);

describe("node names", () => {
  it("label: the server URL, else the cookie; name: the given name, else the label", () => {
    expect(nodeLabel({ url: URL_A, cookie: COOKIE_A })).toBe(URL_A);
    expect(nodeLabel({ url: "", cookie: COOKIE_A })).toBe(COOKIE_A);
    expect(nodeName({ name: "alpha", url: URL_A, cookie: COOKIE_A })).toBe("alpha");
    expect(nodeName({ name: "", url: URL_A, cookie: COOKIE_A })).toBe(URL_A);
    expect(nodeName({ name: "", url: "", cookie: COOKIE_A })).toBe(COOKIE_A);
  });

  const nodes: Affinity[] = [];
  afterEach(async () => {
    await Promise.all(nodes.splice(0).map((a) => a.stop()));
  });
  // The sessions API store makes no call before a session exists: no server needed.
  const affinity = (nodeName?: string) => {
    const a = createAffinity({
      nodeUrl: URL_A,
      nodeName,
      registry: { sidecarUrl: "http://127.0.0.1:1" },
      logger: pino({ level: "silent" }),
    });
    nodes.push(a);
    return a;
  };

  it("the node library calls an unnamed node as the sidecar does, and keeps a given name", () => {
    const unnamed = affinity();
    expect(unnamed.nodeName).toBe(nodeName({ name: "", url: URL_A, cookie: COOKIE_A }));
    expect(unnamed.stats().node.name).toBe(URL_A);
    expect(affinity("beta").nodeName).toBe("beta");
  });
});
