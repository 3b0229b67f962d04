// The one settings module: every tool (the sidecar, the reference node, the node library's registry
// option, the benchmarks) describes its settings as specs and reads them here. A spec's `name` is
// its flag (`--name`); its environment variable is the tool's prefix and the name in upper case
// (`MCP_AFFINITY_` + `REDIS_URL`). Flags win over the environment; an empty variable is unset. A
// typed value given programmatically goes through the same type and the same rules. A bad setting
// throws the tool's own McpAffinityError subclass (a SettingError), naming the flag and the
// variable. `secret` specs are masked by redactSettings/logRedaction wherever settings are logged.
import { McpAffinityError, type ErrorCode } from "../errors.ts";
import { BadValue, REDACTED, type SettingType } from "./types.ts";

export * from "./types.ts";

export interface Setting<T> {
  /** The flag without its dashes. */
  name: string;
  type: SettingType<T>;
  help: string;
  /** The value when the setting is not given (none: the schema's `unset`). */
  def?: T;
  /** Never logged or shown as it is. */
  secret?: boolean;
  /** An environment variable older than the naming rule (kept for compatibility). */
  env?: string;
}

/** One spec per key of the settings object. */
export type SettingsSpec<C> = { [K in keyof C]-?: Setting<NonNullable<C[K]>> };

/** A bad setting: `setting` is where it came from (`--port`, `MCP_NODE_PORT`, or a key). */
export class SettingError extends McpAffinityError {
  constructor(
    code: ErrorCode,
    readonly setting: string,
    message: string,
  ) {
    super(code, message);
  }
}

export interface RuleContext<C> {
  /** Refuses the setting `key`, naming it where it came from (its flag when it was not given). */
  fail(key: keyof C, message: string): never;
  /** How messages name a key: its `--flag` (or the programmatic name, see checkSettings). */
  flag(key: keyof C): string;
}

export interface Schema<C> {
  specs: SettingsSpec<C>;
  /** Prefix of the environment variables; null: flags only. */
  envPrefix: string | null;
  /** The tool's error for a bad setting. */
  error: (setting: string, message: string) => Error;
  /** What a setting that is not given and has no default is (default null). */
  unset?: null | undefined;
  /** Rules between settings, after every value has been read; may fill defaults that depend on others. */
  rules?: (c: C, ctx: RuleContext<C>) => void;
}

export const flagOf = (s: Setting<unknown>) => `--${s.name}`;

export function envOf(schema: { envPrefix: string | null }, s: Setting<unknown>): string | null {
  if (s.env) return s.env;
  return schema.envPrefix === null ? null : schema.envPrefix + s.name.toUpperCase().replace(/-/g, "_");
}

/** `--port (MCP_NODE_PORT)`: how a message names a setting. */
function label(schema: { envPrefix: string | null }, s: Setting<unknown>): string {
  const env = envOf(schema, s);
  return env ? `${flagOf(s)} (${env})` : flagOf(s);
}

type AnySchema<C> = Schema<C> & { specs: Record<string, Setting<unknown>> };
const entries = <C>(schema: Schema<C>) => Object.entries(schema.specs) as Array<[keyof C & string, Setting<unknown>]>;

/** A value as given: text (flag, environment) or typed (programmatic), and the name to report it under. */
interface Given {
  value: unknown;
  text: boolean;
  name: string;
  label: string;
}

/** The one path every setting takes: its type, then the defaults, then the rules between settings. */
function resolve<C>(schema: Schema<C>, given: Map<string, Given>, nameOf: (key: string) => string): C {
  const out: Record<string, unknown> = {};
  const unset = "unset" in schema ? schema.unset : null;
  for (const [key, s] of entries(schema)) {
    const g = given.get(key);
    if (!g) {
      // A list default is copied: no config shares it with another.
      out[key] = s.def === undefined ? unset : Array.isArray(s.def) ? [...s.def] : s.def;
      continue;
    }
    try {
      out[key] = g.text ? s.type.fromText(g.value as string) : s.type.check(g.value);
    } catch (err) {
      if (err instanceof BadValue) throw schema.error(g.name, `invalid ${g.label}: ${err.message}`);
      throw err;
    }
  }
  const c = out as C;
  schema.rules?.(c, {
    fail: (key, message) => {
      throw schema.error(given.get(key as string)?.name ?? nameOf(key as string), message);
    },
    flag: (key) => nameOf(key as string),
  });
  return c;
}

/**
 * Reads argv (without node and the script) and the environment: `--name value`, `--name=value`,
 * `--name` alone for on/off settings. Returns null when `--help` (or `-h`) is asked for.
 */
export function parseSettings<C>(schema: Schema<C>, argv: string[], env: NodeJS.ProcessEnv = process.env): C | null {
  const byFlag = new Map(entries(schema).map(([key, s]) => [s.name, { key, s }]));
  const given = new Map<string, Given>();
  for (const [key, s] of entries(schema)) {
    const name = envOf(schema, s);
    const v = name === null ? undefined : env[name];
    if (v !== undefined && v !== "") given.set(key, { value: v, text: true, name: name!, label: label(schema, s) });
  }
  const fromArgs = new Map<string, Given>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--help" || a === "-h") return null;
    const m = /^--([a-z0-9-]+)(?:=(.*))?$/s.exec(a);
    if (!m) throw schema.error(a, `unexpected argument "${a}" (settings are --name value; see --help)`);
    const hit = byFlag.get(m[1]);
    if (!hit) throw schema.error(`--${m[1]}`, `unknown setting --${m[1]} (see --help)`);
    let value = m[2];
    if (value === undefined) {
      if (hit.s.type.flagAlone) value = "true";
      else if (i + 1 >= argv.length || argv[i + 1].startsWith("--"))
        throw schema.error(`--${m[1]}`, `--${m[1]} needs a value`);
      else value = argv[++i];
    }
    fromArgs.set(hit.key, { value, text: true, name: `--${m[1]}`, label: label(schema, hit.s) });
  }
  for (const [k, g] of fromArgs) given.set(k, g);
  return resolve(schema, given, (key) => flagOf((schema as AnySchema<C>).specs[key]));
}

/**
 * Typed values (programmatic use) through the same types and rules. A null or undefined value is
 * "not given"; an unknown key is refused. Errors name the flag as the command line does, or
 * `keyPrefix + key` when given (an API without flags: `registry.redisUrl`).
 */
export function checkSettings<C>(schema: Schema<C>, values: Partial<C>, keyPrefix?: string): C {
  const specs = (schema as AnySchema<C>).specs;
  const given = new Map<string, Given>();
  for (const [key, value] of Object.entries(values)) {
    const s = Object.hasOwn(specs, key) ? specs[key] : undefined;
    const name = keyPrefix === undefined ? (s ? flagOf(s) : key) : keyPrefix + key;
    if (!s) throw schema.error(name, `unknown setting ${name}`);
    if (value === undefined || value === null) continue;
    given.set(key, { value, text: false, name, label: keyPrefix === undefined ? label(schema, s) : name });
  }
  return resolve(schema, given, (key) => (keyPrefix === undefined ? flagOf(specs[key]) : keyPrefix + key));
}

/** Every setting, its variable, meaning and default, for `--help`. */
export function helpText<C>(schema: Schema<C>, head: string[]): string {
  const rows = entries(schema).map(([, s]) => {
    const flag = s.type.kind ? `${flagOf(s)} <${s.type.kind}>` : flagOf(s);
    const env = envOf(schema, s);
    const def = s.def === undefined || s.def === "" || s.def === false ? "" : ` (default ${s.type.show(s.def)})`;
    return `  ${env ? `${flag.padEnd(38)} ${env}` : flag}\n      ${s.help}${def}`;
  });
  return [...head, ...rows, "  --help\n      this text", ""].join("\n");
}

/** How one value of a setting may be logged or shown: as it is, or masked when secret. */
function shown(s: Setting<unknown> | undefined, value: unknown): unknown {
  if (!s?.secret || value === null || value === undefined) return value;
  return s.type.redact ? s.type.redact(value) : REDACTED;
}

/** The settings as they may be logged or shown: every secret masked (a URL keeps all but its password). */
export function redactSettings<C extends object>(specs: SettingsSpec<C>, values: C): Record<string, unknown> {
  const all = specs as Record<string, Setting<unknown>>;
  return Object.fromEntries(Object.entries(values).map(([k, v]) => [k, shown(all[k], v)]));
}

/**
 * pino's `redact` option for a tool's logger: the secret settings' keys (top level and one level
 * down), and `extra` keys (always masked), through the same masking as redactSettings.
 */
export function logRedaction<C>(
  specs: SettingsSpec<C>,
  extra: string[] = [],
): { paths: string[]; censor: (value: unknown, path: string[]) => unknown } {
  const all = specs as Record<string, Setting<unknown>>;
  const keys = [...Object.keys(all).filter((k) => all[k].secret), ...extra];
  return {
    paths: keys.flatMap((k) => [k, `*.${k}`]),
    censor: (value, path) =>
      Object.hasOwn(all, path[path.length - 1]) ? shown(all[path[path.length - 1]], value) : REDACTED,
  };
}
