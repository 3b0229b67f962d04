// The examples docs/node-library.md shows are the files the tests run: each code block marked
// `<!-- example: <path> -->` must be that file, byte for byte.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ROOT } from "../../dev/paths.ts";

const DOC = "docs/node-library.md";
const MARKED_BLOCK = /<!-- example: (\S+) -->\n```ts\n([\s\S]*?)```\n/g;

describe(`the examples in ${DOC}`, () => {
  const text = readFileSync(join(ROOT, DOC), "utf8");
  const blocks = [...text.matchAll(MARKED_BLOCK)].map((m) => ({ path: m[1]!, code: m[2]! }));

  it("shows the v1 and the v2 example", () => {
    expect(blocks.map((b) => b.path)).toEqual(["node/examples/v1-node.ts", "node/examples/v2-node.ts"]);
  });

  it.each(blocks)("$path as it is", ({ path, code }) => {
    expect(code).toBe(readFileSync(join(ROOT, path), "utf8"));
  });
});
