// Worker body: a HostPool in its own thread, so several pools write to one shared directory truly
// at the same time (as Traefik's instances do on several cores). Started through pool-worker.mjs.
import { parentPort, workerData } from "node:worker_threads";
import { HostPool, type HostOptions, type HostRequestInit } from "./http-wasm-host.ts";

export interface PoolWorkerInput {
  host: Omit<HostOptions, "wasm" | "clock"> & { wasmPath: string };
  instances: number;
  requests: HostRequestInit[];
  /** Int32Array over a SharedArrayBuffer: [1] counts ready workers; they wait until [0] becomes 1. */
  gate?: SharedArrayBuffer;
}
export interface PoolWorkerResult {
  statuses: number[];
  nextCalled: number;
  traps: string[];
  violations: string[];
}

const input = workerData as PoolWorkerInput;
const pool = new HostPool({ ...input.host, wasm: input.host.wasmPath }, input.instances);
if (input.gate) {
  const g = new Int32Array(input.gate);
  Atomics.add(g, 1, 1);
  Atomics.wait(g, 0, 0);
}
const out: PoolWorkerResult = { statuses: [], nextCalled: 0, traps: [], violations: [] };
input.requests.forEach((req, i) => {
  const ex = pool.handle(req, () => ({ status: 200 }), i % input.instances);
  out.statuses.push(ex.response.status);
  if (ex.nextCalled) out.nextCalled++;
  if (ex.trap) out.traps.push(ex.trap.message);
  if (ex.responseTrap) out.traps.push(ex.responseTrap.message);
  out.violations.push(...ex.violations);
});
parentPort!.postMessage(out);
