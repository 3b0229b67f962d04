// Replaces AssemblyScript's default abort (which imports env.abort): the plugin may import only
// http_handler and wasi_snapshot_preview1. Reaching here is a bug; the trap surfaces in Traefik's log.
export function abort(message: string | null, fileName: string | null, line: u32, column: u32): void {
  unreachable();
}
