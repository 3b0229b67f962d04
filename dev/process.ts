// The stack's process manager: children that can be stopped, killed, paused (SIGSTOP: same
// process, same boot) and started again (new process, new boot id), each logging into one file,
// and none left behind when this process exits.
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, mkdirSync, openSync, readFileSync, writeSync } from "node:fs";
import { dirname } from "node:path";
import { ROOT } from "./paths.ts";
import { McpAffinityError, type ErrorCode } from "../lib/errors.ts";

/** A failure of the local stack, with a code naming its kind. */
export class StackError extends McpAffinityError {
  constructor(message: string, code: ErrorCode) {
    super(code, message);
  }
}

/** Every child this process started and has not seen exit: killed on our own exit (no orphans). */
const live = new Set<ChildProcess>();
/** Processes started by others on our behalf (redis-server through dev/redis.ts). */
const extraPids = new Set<number>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const c of live) {
      try {
        // A paused child ignores SIGKILL only in theory; SIGCONT first keeps `ps` tidy.
        c.kill("SIGCONT");
        c.kill("SIGKILL");
      } catch {
        /* already gone */
      }
    }
    for (const pid of extraPids) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        /* already gone */
      }
    }
  });
}

/** Kills `pid` when this process exits, like the children started here. */
export function killOnExit(pid: number): void {
  installExitHook();
  extraPids.add(pid);
}

export interface ProcessSpec {
  cmd: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  logFile: string;
}

/** One child process that can be started again with the same command line. */
export class ManagedProcess {
  child: ChildProcess | null = null;
  private exited: Promise<number | null> = Promise.resolve(null);
  private paused = false;
  private expected = false;
  starts = 0;
  /** Called when the process exits without stop() or kill() asking for it. */
  onUnexpectedExit: ((code: number | null, signal: NodeJS.Signals | null) => void) | null = null;

  constructor(
    readonly name: string,
    readonly spec: ProcessSpec,
  ) {}

  get pid(): number | undefined {
    return this.child?.pid;
  }
  get running(): boolean {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }
  get isPaused(): boolean {
    return this.paused;
  }

  start(): void {
    if (this.running) throw new StackError(`${this.name} is already running`, "ERR_STACK_STATE");
    installExitHook();
    mkdirSync(dirname(this.spec.logFile), { recursive: true });
    const fd = openSync(this.spec.logFile, "a");
    writeSync(
      fd,
      `--- ${new Date().toISOString()} start #${++this.starts}: ${this.spec.cmd} ${this.spec.args.join(" ")}\n`,
    );
    const c = spawn(this.spec.cmd, this.spec.args, {
      cwd: this.spec.cwd ?? ROOT,
      env: { ...process.env, ...this.spec.env },
      stdio: ["ignore", fd, fd],
    });
    closeSync(fd);
    this.child = c;
    this.paused = false;
    this.expected = false;
    live.add(c);
    this.exited = new Promise((resolve) => {
      c.once("exit", (code, signal) => {
        live.delete(c);
        try {
          const f = openSync(this.spec.logFile, "a");
          writeSync(f, `--- ${new Date().toISOString()} exit code=${code} signal=${signal}\n`);
          closeSync(f);
        } catch {
          /* log dir removed */
        }
        resolve(code);
        if (!this.expected && this.child === c) this.onUnexpectedExit?.(code, signal);
      });
      c.once("error", () => resolve(null));
    });
  }

  /** SIGTERM, then SIGKILL after `graceMs`. Resolves with the exit code (null when killed). */
  async stop(graceMs = 5000): Promise<number | null> {
    const c = this.child;
    if (!c || !this.running) return c?.exitCode ?? null;
    this.expected = true;
    if (this.paused) this.resume();
    c.kill("SIGTERM");
    const timer = setTimeout(() => c.kill("SIGKILL"), graceMs);
    const code = await this.exited;
    clearTimeout(timer);
    return code;
  }

  /** SIGKILL: the process dies at once, nothing is cleaned up (a crash). */
  async kill(): Promise<void> {
    const c = this.child;
    if (!c || !this.running) return;
    this.expected = true;
    c.kill("SIGKILL");
    await this.exited;
    this.paused = false;
  }

  /** SIGSTOP: the process stays, with its boot id and its sessions, but answers nothing. */
  pause(): void {
    if (!this.running) throw new StackError(`${this.name} is not running`, "ERR_STACK_STATE");
    this.child!.kill("SIGSTOP");
    this.paused = true;
  }

  resume(): void {
    if (!this.running) return;
    this.child!.kill("SIGCONT");
    this.paused = false;
  }

  waitExit(): Promise<number | null> {
    return this.exited;
  }

  log(): string {
    try {
      return readFileSync(this.spec.logFile, "utf8");
    } catch {
      return "";
    }
  }

  /** The last lines of the log, for error messages. */
  tail(lines = 20): string {
    return this.log()
      .split("\n")
      .slice(-lines - 1)
      .join("\n");
  }
}
