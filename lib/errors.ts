// The one base class of the project's errors, and every code they carry. Callers branch on `code`
// (a stable string), never on the message or the class; `cause` keeps the underlying error.

export const ERROR_CODES = {
  /** A registry setting that cannot work (no url, sentinel or cluster nodes). */
  ERR_REGISTRY_CONFIG: "registry configuration",
  /** The registry store could not be reached or a command failed (down, timeout). */
  ERR_REGISTRY_UNAVAILABLE: "registry unreachable or failing",
  /** A call on a registry that was closed. */
  ERR_REGISTRY_CLOSED: "registry closed",
  /** A record, change, session id or cookie outside the shared schema. */
  ERR_REGISTRY_SCHEMA: "registry record outside the schema",
  /** The sidecar's sessions API refused a call or could not be reached. */
  ERR_REGISTRY_SIDECAR_API: "sidecar sessions API error",
  /** A session id that does not parse as a routing token. */
  ERR_SESSION_TOKEN: "malformed session token",
  /** A shared-directory view file outside its format. */
  ERR_VIEW_FORMAT: "malformed view file",
  /** A plugin event batch outside its format. */
  ERR_EVENT_FORMAT: "malformed event batch",
  /** A bad node library option (createAffinity). */
  ERR_AFFINITY_CONFIG: "node library option",
  /** A registry call of the node library that took longer than registryTimeoutMs. */
  ERR_AFFINITY_TIMEOUT: "node library registry call timed out",
  /** A lifecycle step the node library does not take (drain() after stop(): a programming error). */
  ERR_AFFINITY_LIFECYCLE: "node library lifecycle step refused",
  /** A bad setting of the reference node (flag or environment variable). */
  ERR_NODE_CONFIG: "reference node setting",
  /** The reference node's deliberately failing local close (--fail-close). */
  ERR_NODE_FAIL_CLOSE: "reference node failing close",
  /** A bad sidecar setting (flag, environment variable or makeConfig value). */
  ERR_SIDECAR_CONFIG: "sidecar setting",
  /** The shared directory cannot be created or written (--dir). */
  ERR_SIDECAR_DIR: "sidecar shared directory unusable",
  /** The sidecar's HTTP port cannot be listened on. */
  ERR_SIDECAR_LISTEN: "sidecar cannot listen",
  /** A lifecycle step the sidecar does not take (a programming error). */
  ERR_SIDECAR_LIFECYCLE: "sidecar lifecycle step refused",
  /** Traefik's API could not be read (the sidecar then keeps node states from heartbeats). */
  ERR_TRAEFIK_API: "Traefik API unreadable",
  /** A bad MCPA_* setting of the local stack (npm start). */
  ERR_STACK_CONFIG: "local stack setting",
  /** A template or rendered configuration of the local stack that cannot be used. */
  ERR_STACK_TEMPLATE: "local stack template",
  /** openssl could not make the local stack's self-signed certificate. */
  ERR_STACK_TLS: "local stack: no TLS certificate",
  /** A part of the local stack did not start or stopped (Traefik, sidecar, node, plugin). */
  ERR_STACK_TRAEFIK: "local stack: Traefik failed",
  ERR_STACK_SIDECAR: "local stack: sidecar failed",
  ERR_STACK_NODE: "local stack: node failed",
  ERR_STACK_PLUGIN: "local stack: plugin not loaded",
  /** npm start's own check (a session through the started stack) failed. */
  ERR_STACK_SELF_CHECK: "local stack self-check failed",
  /** The local stack's view or state is not what a step needs. */
  ERR_STACK_VIEW: "local stack: view not published",
  ERR_STACK_STATE: "local stack: wrong state",
  /** A bad benchmark flag. */
  ERR_BENCH_CONFIG: "benchmark flag",
  /** A benchmark could not set up its sessions or its Redis. */
  ERR_BENCH_INIT: "benchmark session set-up failed",
  ERR_BENCH_REDIS: "benchmark Redis failed",
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class McpAffinityError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** What a log line carries of any thrown value (ours, Node's errno errors, others): message and code, never a stack. */
export function errFields(err: unknown): { message?: string; code?: string } {
  const e = err as { message?: unknown; code?: unknown } | null | undefined;
  return {
    message: typeof e?.message === "string" ? e.message : undefined,
    code: typeof e?.code === "string" ? e.code : undefined,
  };
}
