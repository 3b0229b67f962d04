// Baseline guest for benchmarks: built with the same compiler settings as the plugin, it reads
// the session header like the plugin does and passes every request on untouched.
import "../assembly/abort";
import { Bytes } from "../assembly/bytes";
import { KIND_REQUEST, headerValues } from "../assembly/abi";

const vals = new Bytes(512);

export function handle_request(): u64 {
  headerValues(KIND_REQUEST, "Mcp-Session-Id", vals);
  return 1;
}

export function handle_response(reqCtx: u32, isError: u32): void {}
