// The shared-directory side of the real-host conformance test: the Go test never encodes or decodes
// a view, learned or event file itself; it runs this script, which does it with lib/view (through
// the plugin test fixture), so the formats keep one home.
//
//   node --import tsx test/conformance/fixtures.ts write  < {views, sessionIds, tokens}
//     publishes each view into its directory; prints {cookies: {node: cookie}, hashes: {id: hex},
//     tokens: {name: session id}} (tokens minted or wrapped with lib/token)
//   node --import tsx test/conformance/fixtures.ts read   < {dirs, sessionIds}
//     prints {dirs: {<dir>: {decisions, learned, closed, dropped, learnedFiles, invalidLearned}},
//     hashes: {id: hex}}
//     (event batches strictly parsed: a malformed batch fails the run)
import { readFileSync } from "node:fs";
import { listLearned } from "../../lib/view/index.ts";
import { mintSessionId, wrapSessionId, wrapTaskId } from "../../lib/token/index.ts";
import {
  CLUSTER_VIEW,
  COOKIE,
  GONE_COOKIE,
  cookieValueFor,
  publish,
  readEvents,
  republishMeta,
  sessionHashHex,
  type ViewSpec,
} from "../support/plugin-fixture.ts";
import type { NodeViewState, ShardBits } from "../../lib/view/index.ts";

/** The test cluster's nodes by name: sticky cookie values as Traefik computes them. */
const NODE_COOKIES: Record<string, string> = {
  ...COOKIE,
  gone: GONE_COOKIE,
  unlisted: cookieValueFor("http://10.0.0.9:3000"),
};

interface NodeSpec {
  id: number;
  /** A name of NODE_COOKIES. */
  node: string;
  state: NodeViewState;
  retryAfterSeconds?: number;
}
interface GoViewSpec {
  /** "cluster": the fixture's CLUSTER_VIEW (nodes and sessions below are then ignored). */
  base?: "cluster";
  epoch?: number;
  /** Shards carry this epoch while the meta carries `epoch` (a publish caught half-way). */
  shardEpoch?: number;
  /** The meta's `published` stamp is this many ms before now (negative: in the future). */
  publishedAgoMs?: number;
  shardBits?: ShardBits;
  nodes?: NodeSpec[];
  sessions?: { id: string; node: number; closed?: boolean }[];
  /** This many more sessions (ids `filler-<i>`), spread over the nodes: shards of a large cluster. */
  filler?: number;
  /** `boot` lines (node incarnations for routing tokens); added to the base's. */
  boots?: { node: string; bootTag: string; state: NodeViewState; retryAfterSeconds?: number }[];
}
/** A session id with a routing token (minted by the node library, or wrapped by the plugin), or a task handle. */
interface TokenSpec {
  kind: "minted" | "wrapped" | "task";
  node: string;
  bootTag: string;
  /** wrapped, task: the server's own id. */
  inner?: string;
}
interface WriteInput {
  views: Record<string, GoViewSpec>;
  sessionIds: string[];
  tokens?: Record<string, TokenSpec>;
}

/** Nodes `n1`, `n2`, ... beyond the named ones, for views of a large cluster. */
const NUMBERED_NODE = /^n([1-9][0-9]{0,2})$/;

function cookieOf(name: string): string {
  const numbered = NUMBERED_NODE.exec(name);
  if (numbered)
    return cookieValueFor(`http://10.1.${Number(numbered[1]) % 256}.${1 + (Number(numbered[1]) >> 8)}:3000`);
  const c = NODE_COOKIES[name];
  if (!c)
    throw new Error(`fixtures.ts: no node ${JSON.stringify(name)} (known: ${Object.keys(NODE_COOKIES).join(", ")})`);
  return c;
}

async function write(input: WriteInput): Promise<unknown> {
  for (const [dir, v] of Object.entries(input.views)) {
    const base: Pick<ViewSpec, "nodes" | "sessions" | "boots"> =
      v.base === "cluster"
        ? CLUSTER_VIEW
        : {
            nodes: (v.nodes ?? []).map((n) => ({
              id: n.id,
              cookie: cookieOf(n.node),
              state: n.state,
              retryAfterSeconds: n.retryAfterSeconds,
            })),
            sessions: [
              ...(v.sessions ?? []),
              ...Array.from({ length: v.filler ?? 0 }, (_, i) => ({
                id: `filler-${i}`,
                node: v.nodes![i % v.nodes!.length]!.id,
              })),
            ],
          };
    const boots = (v.boots ?? []).map((b) => ({
      cookie: cookieOf(b.node),
      bootTag: b.bootTag,
      state: b.state,
      retryAfterSeconds: b.retryAfterSeconds,
    }));
    const spec: ViewSpec = {
      ...base,
      boots: [...(base.boots ?? []), ...boots],
      epoch: v.epoch,
      shardBits: v.shardBits,
      published: Date.now() - (v.publishedAgoMs ?? 0),
    };
    if (v.shardEpoch === undefined) await publish(dir, spec);
    else {
      await publish(dir, { ...spec, epoch: v.shardEpoch });
      await republishMeta(dir, spec);
    }
  }
  return {
    cookies: NODE_COOKIES,
    tokens: Object.fromEntries(
      Object.entries(input.tokens ?? {}).map(([name, t]) => [
        name,
        t.kind === "minted"
          ? mintSessionId(cookieOf(t.node), t.bootTag)
          : t.kind === "task"
            ? wrapTaskId(t.inner ?? "", cookieOf(t.node), t.bootTag)
            : wrapSessionId(t.inner ?? "", cookieOf(t.node), t.bootTag),
      ]),
    ),
    hashes: Object.fromEntries(input.sessionIds.map((id) => [id, sessionHashHex(id)])),
  };
}

async function read(input: { dirs: string[]; sessionIds: string[] }): Promise<unknown> {
  const out: Record<string, unknown> = {};
  for (const dir of input.dirs) {
    const { all } = readEvents(dir);
    const invalidLearned: string[] = [];
    const learned = await listLearned(dir, { onInvalid: (name) => invalidLearned.push(name) });
    out[dir] = {
      decisions: all.decisions,
      learned: all.learned,
      closed: all.closed,
      dropped: all.dropped,
      learnedFiles: Object.fromEntries(learned.map((l) => [l.hashHex, l.cookie])),
      invalidLearned,
    };
  }
  return { dirs: out, hashes: Object.fromEntries(input.sessionIds.map((id) => [id, sessionHashHex(id)])) };
}

const mode = process.argv[2];
const input = JSON.parse(readFileSync(0, "utf8"));
const result = mode === "write" ? await write(input) : mode === "read" ? await read(input) : undefined;
if (result === undefined) {
  console.error(`fixtures.ts: unknown mode ${JSON.stringify(mode)} (write | read)`);
  process.exit(2);
}
process.stdout.write(JSON.stringify(result));
