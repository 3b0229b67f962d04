// The value types of settings: each reads a flag's or environment variable's text, and checks a
// typed value given programmatically the same way (one range, one message for both). A refused
// value throws BadValue with the reason only; lib/settings/index.ts adds which setting it was.
import { existsSync } from "node:fs";
import { isIP } from "node:net";
import type { HostPort } from "../registry/index.ts";

/** Why a value was refused (internal: the settings parser turns it into the tool's error). */
export class BadValue extends Error {}

const bad = (why: string): never => {
  throw new BadValue(why);
};

export interface SettingType<T> {
  /** How the help text names a value (`<duration>`). */
  readonly kind: string;
  /** A value from a flag or an environment variable. */
  fromText(text: string): T;
  /** A typed value (programmatic use), held to the same rules as its text. */
  check(value: unknown): T;
  /** The value as a flag takes it (defaults in the help text). */
  show(value: T): string;
  /** A flag that may stand alone (`--redis-tls` = true). */
  readonly flagAlone?: boolean;
  /** How a secret value is shown in logs (default `***`). */
  redact?(value: T): unknown;
}

export const REDACTED = "***";

/** pino's levels and silent: every tool's --log-level. */
export const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "fatal", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** `a, b or c`, each quoted when text. */
function choices(values: readonly unknown[]): string {
  const s = values.map(String);
  return s.length < 2 ? s.join("") : `${s.slice(0, -1).join(", ")} or ${s[s.length - 1]}`;
}

const DAY = 86_400_000;
const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: DAY };

/** Milliseconds in the largest unit that divides them exactly (30d, 15s, 250ms). */
export function showMs(ms: number): string {
  for (const unit of ["d", "h", "m", "s"]) if (ms !== 0 && ms % UNITS[unit] === 0) return `${ms / UNITS[unit]}${unit}`;
  return `${ms}ms`;
}

/** Milliseconds; text takes a unit (250ms, 5s, 10m, 30d; a bare number is ms). */
export function duration(min = 1, max = 400 * DAY): SettingType<number> {
  const check = (v: unknown): number => {
    if (typeof v !== "number" || !Number.isFinite(v)) return bad(`${JSON.stringify(v)} is not a duration`);
    const ms = Math.round(v);
    if (ms < min || ms > max) bad(`${showMs(ms)} is out of range (${showMs(min)} .. ${showMs(max)})`);
    return ms;
  };
  return {
    kind: "duration",
    fromText: (text) => {
      const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(text.trim());
      if (!m) return bad(`"${text}" is not a duration (e.g. 250ms, 5s, 10m, 30d; a bare number is ms)`);
      return check(Number(m[1]) * UNITS[m[2] ?? "ms"]);
    },
    check,
    show: showMs,
  };
}

/** A number within [min, max]: whole unless `whole` is false. */
export function num(min: number, max: number, whole = true): SettingType<number> {
  const what = whole ? "a whole number" : "a number";
  const check = (v: unknown): number => {
    if (typeof v !== "number" || !Number.isFinite(v) || (whole && !Number.isInteger(v)))
      return bad(`${JSON.stringify(v)} is not ${what}`);
    if (v < min || v > max) bad(`${v} is out of range (${min}..${max})`);
    return v;
  };
  return {
    kind: whole ? "n" : "number",
    fromText: (text) => {
      const t = text.trim();
      const ok = whole ? /^[-+]?\d+$/.test(t) : t !== "" && Number.isFinite(Number(t));
      return ok ? check(Number(t)) : bad(`"${text}" is not ${what}`);
    },
    check,
    show: String,
  };
}

export const int = (min: number, max: number): SettingType<number> => num(min, max, true);

const TRUE = ["1", "true", "yes", "on"];
const FALSE = ["0", "false", "no", "off"];

/** On or off: a flag alone is on; text 1/true/yes/on or 0/false/no/off. */
export const bool: SettingType<boolean> = {
  kind: "",
  flagAlone: true,
  fromText: (text) => {
    const t = text.trim().toLowerCase();
    return TRUE.includes(t) ? true : FALSE.includes(t) ? false : bad(`"${text}" is not 1, true, 0 or false`);
  },
  check: (v) => (typeof v === "boolean" ? v : bad(`${JSON.stringify(v)} is not true or false`)),
  show: String,
};

/** One of a fixed list (log levels, shard widths). */
export function oneOf<T extends string | number>(values: readonly T[]): SettingType<T> {
  const refuse = (v: unknown): never => bad(`must be ${choices(values)}, not "${String(v)}"`);
  return {
    kind: values.join("|"),
    fromText: (text) => values.find((v) => String(v) === text.trim()) ?? refuse(text),
    check: (v) => (values.includes(v as T) ? (v as T) : refuse(v)),
    show: String,
  };
}

/** Text; `rule` returns why a value is refused. */
export function text(rule?: (v: string) => string | undefined, kind = "text"): SettingType<string> {
  const check = (v: unknown): string => {
    if (typeof v !== "string") return bad(`${JSON.stringify(v)} is not text`);
    const why = rule?.(v);
    return why === undefined ? v : bad(why);
  };
  return { kind, fromText: check, check, show: (v) => v };
}

export const nonEmpty = (v: string): string | undefined => (v ? undefined : "is empty");

/** An IP address (or localhost). */
export const ipAddress = text(
  (v) => (v && (isIP(v) || v === "localhost") ? undefined : `"${v}" is not an IP address`),
  "addr",
);

/** The same URL without its password. */
export function withoutPassword(v: string): string {
  return v.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:@/]*:)[^@/]*@/i, `$1${REDACTED}@`);
}

/** A URL of one of `protocols` (`redis:`); a secret one is logged without its password. */
export function url(protocols: string[]): SettingType<string> {
  const check = (v: unknown): string => {
    if (typeof v !== "string") return bad(`${JSON.stringify(v)} is not a URL`);
    let u: URL;
    try {
      u = new URL(v);
    } catch {
      return bad(`"${withoutPassword(v)}" is not a URL`);
    }
    if (!protocols.includes(u.protocol)) bad(`protocol must be ${choices(protocols)}`);
    return v;
  };
  return { kind: "url", fromText: check, check, show: (v) => v, redact: withoutPassword };
}

/** Comma-separated text. */
export const list: SettingType<string[]> = {
  kind: "a,b",
  fromText: (text) =>
    text
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean),
  check: (v) =>
    Array.isArray(v) && v.every((s) => typeof s === "string" && s.trim() === s && s)
      ? (v as string[])
      : bad(`${JSON.stringify(v)} is not a list of names`),
  show: (v) => v.join(","),
};

const showHostPort = (h: HostPort) => `${h.host.includes(":") ? `[${h.host}]` : h.host}:${h.port}`;

/** `host:port,host:port` (IPv6 in brackets); at least one. */
export const hostPorts: SettingType<HostPort[]> = {
  kind: "host:port,...",
  fromText: (text) =>
    hostPorts.check(
      list.fromText(text).map((s) => {
        const m = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(s);
        return m ? { host: m[1].replace(/^\[|\]$/g, ""), port: Number(m[2]) } : bad(`"${s}" is not host:port`);
      }),
    ),
  check: (v) => {
    if (!Array.isArray(v) || !v.length) return bad("needs at least one host:port");
    for (const h of v as HostPort[]) {
      if (typeof h?.host !== "string" || !h.host || !Number.isInteger(h.port) || h.port < 1 || h.port > 65535)
        bad(`${typeof h?.host === "string" ? `"${showHostPort(h)}"` : JSON.stringify(h)} is not host:port`);
    }
    return v as HostPort[];
  },
  show: (v) => v.map(showHostPort).join(","),
};

/** The path of a file that exists. */
export const file = text((v) => (!v ? "is empty" : existsSync(v) ? undefined : `no such file "${v}"`), "file");
