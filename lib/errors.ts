// The one base class of the project's errors, and every code they carry. Callers branch on `code`
// (a stable string), never on the message or the class; `cause` keeps the underlying error.

export const ERROR_CODES = {
  /** A registry setting that cannot work (no url, sentinel without a master name). */
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
  /** A bad setting of the reference node (flag or environment variable). */
  ERR_NODE_CONFIG: "reference node setting",
  /** The reference node's deliberately failing local close (--fail-close). */
  ERR_NODE_FAIL_CLOSE: "reference node failing close",
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
