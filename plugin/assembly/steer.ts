// Placement of new sessions: an initialize whose sticky cookie names no up server is given an up
// server's cookie (Traefik's balancer obeys it), so no new session lands on a node that is
// draining, down or gone while an up one exists. Works with any provider: the nodes and their
// states come from the view's incarnation table (`boot` lines; a node's running boot carries the
// node's state, so each up line is a distinct up server).
import { RegistryView } from "./view";
import { NODE_UP } from "./core";

// Per instance; instances serve requests in turn, so counters spread picks evenly across servers.
let turn: u32 = 0;

/** Seeds the rotation (instances created together must not all start on the same server). */
export function seedSteering(seed: u64): void {
  turn = <u32>(seed % 65521);
}

/**
 * The cookie value a new session should carry, or "" to leave the request as it is: the client's
 * cookie already names an up server, or the view lists no up server (Traefik decides).
 */
export function steerNewSession(view: RegistryView, clientCookie: string): string {
  const n = view.bootCookies.length;
  let ups = 0;
  for (let i = 0; i < n; i++) {
    if (unchecked(view.bootStates[i]) != NODE_UP) continue;
    if (unchecked(view.bootCookies[i]) == clientCookie) return "";
    ups++;
  }
  if (ups == 0) return "";
  let k = <i32>(turn++ % <u32>ups);
  for (let i = 0; i < n; i++) {
    if (unchecked(view.bootStates[i]) != NODE_UP) continue;
    if (k-- == 0) return unchecked(view.bootCookies[i]);
  }
  return "";
}
