// Test entry: exposes the pure decision core alone (no ABI, no WASI imports) so the decision
// table can be checked exhaustively without a host. Built to plugin/build/core.wasm.
import "../assembly/abort";
import { RouteInput, Decision, decideRoute } from "../assembly/core";

const input = new RouteInput();
const out = new Decision();

/** Returns action * 16 + reason. */
export function decide(id: i32, view: i32, session: i32, ownerState: i32, cookie: i32, rejectMisroute: i32, passWhenDown: i32): i32 {
  input.id = id;
  input.view = view;
  input.session = session;
  input.ownerState = <u8>ownerState;
  input.cookie = cookie;
  input.rejectMisroute = rejectMisroute != 0;
  input.passWhenDown = passWhenDown != 0;
  const d = decideRoute(input, out);
  return d.action * 16 + d.reason;
}
