// A TypeScript http-wasm host that behaves like the one Traefik v3.7.9 runs:
// http-wasm-host-go v0.7.0 (handler/middleware.go + handler/nethttp) on wazero, with the non-socket
// WASI of wazero (wall clock real, monotonic clock fake, random_get deterministic, sleeps return at
// once). File access goes through Node's built-in `node:wasi` over a preopened host directory.
//
// One HttpWasmHost is one guest instance (its memory persists across requests); HostPool holds
// several instances of one module, like the host's sync.Pool.
//
// Header names and values inside the host are Go strings: byte strings (one JS char per byte,
// latin1). ASCII reads the same either way; use `bytesToUtf8`/`utf8ToBytes` for anything else.

import { openSync, readFileSync } from "node:fs";
import { WASI } from "node:wasi";
import {
  GoHeader,
  TRAILER_PREFIX,
  canonicalHeaderKey,
  goJsonMarshal,
  goSortStrings,
  type HeaderInit,
} from "./go-http.ts";
import { readWasm, sig } from "./wasm-binary.ts";

/** A function the guest imports; each is called with the guest's i32/i64 arguments. */
type HostFunction = (...args: never[]) => unknown;

export const FEATURE_BUFFER_REQUEST = 1;
export const FEATURE_BUFFER_RESPONSE = 2;
export const FEATURE_TRAILERS = 4;
export const HEADER_REQUEST = 0;
export const HEADER_RESPONSE = 1;
export const HEADER_REQUEST_TRAILERS = 2;
export const HEADER_RESPONSE_TRAILERS = 3;
export const BODY_REQUEST = 0;
export const BODY_RESPONSE = 1;
export const LOG_DEBUG = -1;
export const LOG_INFO = 0;
export const LOG_WARN = 1;
export const LOG_ERROR = 2;
export const LOG_NONE = 3;

const LEVEL_NAMES: Record<number, string> = { [-1]: "debug", 0: "info", 1: "warn", 2: "error", 3: "none" };

/** A panic of the Go host inside a host function: wazero turns it into a trap of the guest call. */
export class HostPanic extends Error {
  readonly code = "HOST_PANIC";
}
/** The guest called proc_exit: wazero closes the module instance. */
export class GuestExit extends Error {
  readonly code = "GUEST_EXIT";
  constructor(readonly exitCode: number) {
    super(`module closed with exit_code(${exitCode})`);
  }
}

// eslint-disable-next-line no-control-regex
const ASCII = /^[\x00-\x7f]*$/;
export const utf8ToBytes = (s: string): string => (ASCII.test(s) ? s : Buffer.from(s, "utf8").toString("latin1"));
export const bytesToUtf8 = (s: string): string => Buffer.from(s, "latin1").toString("utf8");
const enc = (s: string | Uint8Array): Uint8Array => (typeof s === "string" ? Buffer.from(s, "utf8") : s);

export interface LogEntry {
  level: number;
  levelName: string;
  message: string;
}

export interface HostRequestInit {
  method?: string;
  /** Request URI as the client sent it (path + query). */
  uri?: string;
  protocol?: string;
  /** r.Host (Go promotes the Host header out of the map). */
  host?: string;
  /** Header lines in order; values are UTF-8 and converted to Go byte strings. */
  headers?: HeaderInit;
  body?: string | Uint8Array;
  /** Body without Content-Length (Transfer-Encoding: chunked; Go removes that header from the map). */
  chunked?: boolean;
  sourceAddr?: string;
}

/** What the next handler (the upstream: Traefik's balancer and the node) received. */
export interface ForwardedRequest {
  method: string;
  uri: string;
  protocol: string;
  host: string;
  headers: GoHeader;
  body: Uint8Array;
  /**
   * The body the proxy reads is in memory (the guest wrote it back, or a buffered read), not the
   * client's connection: Go's server closing that connection's body cannot cut the answer.
   */
  bodyInMemory: boolean;
  /** Every `Cookie` line the upstream sees (Go byte strings). */
  cookies: string[];
}

export interface UpstreamResponse {
  status?: number;
  headers?: HeaderInit;
  /** One chunk or several writes (an SSE stream). */
  body?: string | Uint8Array | (string | Uint8Array)[];
}
export type NextHandler = (req: ForwardedRequest) => UpstreamResponse | void;

export interface ClientResponse {
  status: number;
  headers: GoHeader;
  body: Uint8Array;
  text(): string;
  json(): any;
  header(name: string): string | undefined;
}

export interface HeaderWrite {
  kind: number;
  op: "set" | "add";
  name: string;
  value: string;
}

export interface Exchange {
  /** handle_request result. */
  ctxNext: bigint;
  reqCtx: number;
  nextCalled: boolean;
  forwarded?: ForwardedRequest;
  response: ClientResponse;
  /** handle_request trapped (the client got a 500 with the trap text, as nethttp does). */
  trap?: Error;
  /** handle_response trapped (nethttp panics: the connection is torn down). */
  responseTrap?: Error;
  /** Features in effect for this request (middleware features | enabled during the request). */
  features: number;
  /** The response was held by buffer_response and released after handle_response. */
  responseBuffered: boolean;
  logs: LogEntry[];
  headerWrites: HeaderWrite[];
  /** Things the real host would not do what the guest intended (leak, bad header bytes...). */
  violations: string[];
}

export interface HostClock {
  /** Wall clock in nanoseconds since the Unix epoch. */
  nowNs(): bigint;
}
/** The real wall clock plus an adjustable offset, shared by every instance that holds it. */
export class OffsetClock implements HostClock {
  offsetMs = 0;
  /** When set, time stands still at this wall-clock ms (plus offsetMs): see freeze(). */
  frozenAtMs?: number;
  nowNs(): bigint {
    if (this.frozenAtMs !== undefined) return BigInt(this.frozenAtMs + this.offsetMs) * 1_000_000n;
    const us = Math.floor((performance.timeOrigin + performance.now()) * 1000) + this.offsetMs * 1000;
    return BigInt(us) * 1000n;
  }
  nowMs(): number {
    if (this.frozenAtMs !== undefined) return this.frozenAtMs + this.offsetMs;
    return Math.floor(performance.timeOrigin + performance.now()) + this.offsetMs;
  }
  /** Stops the clock (at now, or at a given ms): only advance() moves it afterwards. */
  freeze(atMs = Math.floor(performance.timeOrigin + performance.now())): this {
    this.frozenAtMs = atMs;
    this.offsetMs = 0;
    return this;
  }
  advance(ms: number): void {
    this.offsetMs += ms;
  }
}

export interface HostOptions {
  /** The guest: a compiled module, its bytes, or a file path. */
  wasm: WebAssembly.Module | Uint8Array | string;
  /**
   * Guest config. An object is marshalled like Traefik does (Go's json.Marshal of map[string]any);
   * a string or bytes is passed as is; undefined = no config (get_config returns 0).
   */
  config?: unknown;
  /** Guest path -> host directory (Traefik's settings.mounts). */
  mounts?: Record<string, string>;
  env?: Record<string, string>;
  clock?: HostClock;
  /** Traefik's WasmLogger enables every level; a custom predicate models other hosts. */
  logEnabled?: (level: number) => boolean;
  /** Called for every log line (besides recording it). */
  onLog?: (e: LogEntry) => void;
  /** Keep at most this many log entries in `host.logs` (oldest dropped). */
  maxLogs?: number;
}

/** Middleware-wide state shared by the instances of one module (handler.middleware). */
export class MiddlewareState {
  /** Features enabled outside a request (during _start), as m.features. */
  features = 0;
  /** nethttp's NewHandler copy of the features, taken after the first instance started. */
  handlerFeatures = 0;
  module: WebAssembly.Module;
  configBytes: Uint8Array | undefined;
  constructor(readonly opts: HostOptions) {
    this.module = compileGuest(opts.wasm);
    this.configBytes =
      opts.config === undefined
        ? undefined
        : typeof opts.config === "string"
          ? Buffer.from(opts.config, "utf8")
          : opts.config instanceof Uint8Array
            ? opts.config
            : Buffer.from(goJsonMarshal(opts.config), "utf8");
  }
}

/** Validates the guest like handler.NewMiddleware's compileGuest does. */
export function compileGuest(wasm: WebAssembly.Module | Uint8Array | string): WebAssembly.Module {
  if (wasm instanceof WebAssembly.Module) return wasm;
  const bytes = typeof wasm === "string" ? readFileSync(wasm) : wasm;
  const info = readWasm(bytes);
  const fn = (n: string) => info.exports.find((e) => e.name === n && e.kind === "function");
  const hr = fn("handle_request");
  if (!hr) throw new Error("wasm: guest doesn't export func[handle_request]");
  if (sig(hr.type) !== "()->(i64)")
    throw new Error("wasm: guest exports the wrong signature for func[handle_request]. should be () -> (i64)");
  const hs = fn("handle_response");
  if (!hs) throw new Error("wasm: guest doesn't export func[handle_response]");
  if (sig(hs.type) !== "(i32,i32)->()")
    throw new Error("wasm: guest exports the wrong signature for func[handle_response]. should be (i32, 32) -> ()");
  if (!info.exports.some((e) => e.name === "memory" && e.kind === "memory"))
    throw new Error("wasm: guest doesn't export memory[memory]");
  return new WebAssembly.Module(bytes as Uint8Array<ArrayBuffer>);
}

// ---- request body readers, as Go's net/http server and nethttp's buffering wrapper behave ----

interface GoReader {
  /** Read into at most `max` bytes: [bytes, eof]. */
  read(max: number): [Uint8Array, boolean];
}
/**
 * A body over bytes. net/http's server body (eofWithData) returns io.EOF together with its last
 * bytes; bytes.Reader / bytes.Buffer return the data without error, then (0, EOF).
 */
class ServerBody implements GoReader {
  pos = 0;
  constructor(
    readonly data: Uint8Array,
    readonly eofWithData: boolean,
  ) {}
  read(max: number): [Uint8Array, boolean] {
    const rest = this.data.length - this.pos;
    if (rest === 0) return [new Uint8Array(0), true];
    const n = Math.min(max, rest);
    const out = this.data.subarray(this.pos, this.pos + n);
    this.pos += n;
    return [out, this.eofWithData && this.pos === this.data.length];
  }
  remaining(): Uint8Array {
    const out = this.data.subarray(this.pos);
    this.pos = this.data.length;
    return out;
  }
}
/** nethttp bufferingRequestBody: (v0.7.0) keeps only bytes read together with an error. */
class BufferingRequestBody implements GoReader {
  buffer: Uint8Array[] = [];
  constructor(readonly delegate: GoReader & { remaining?: () => Uint8Array }) {}
  read(max: number): [Uint8Array, boolean] {
    const [b, eof] = this.delegate.read(max);
    if (eof && b.length > 0) this.buffer.push(Uint8Array.from(b));
    return [b, eof];
  }
  bufferedLength(): number {
    return this.buffer.reduce((a, b) => a + b.length, 0);
  }
}
/** bytes.Reader / bytes.Buffer over `data`. */
const bytesBody = (data: Uint8Array) => new ServerBody(data, false);
type RequestBody = ServerBody | BufferingRequestBody;

/** r.Body now: after write_body, the guest's bytes.Buffer with everything written so far. */
function currentBody(s: RequestState): RequestBody {
  if (s.requestBodyWriter && s.requestBodyWritten) {
    s.body = bytesBody(concat(s.requestBodyWriter));
    s.requestBodyWritten = false;
  }
  return s.body;
}

function drain(r: RequestBody): Uint8Array {
  if (r instanceof BufferingRequestBody) throw new Error("unreachable");
  return r.remaining();
}
const concat = (parts: Uint8Array[]): Uint8Array =>
  parts.length === 1 ? parts[0]! : new Uint8Array(Buffer.concat(parts));

// ---- response writers: Go's server ResponseWriter and nethttp's bufferingResponseWriter ----

class ClientWriter {
  header = new GoHeader();
  status = 0;
  committed?: GoHeader;
  chunks: Uint8Array[] = [];
  informational: number[] = [];
  superfluous = 0;
  writeHeader(code: number): void {
    // checkWriteHeaderCode panics on codes Go cannot send.
    if (code < 100 || code > 999) throw new HostPanic(`invalid WriteHeader code ${code}`);
    if (this.status !== 0) {
      this.superfluous++; // "http: superfluous response.WriteHeader call"
      return;
    }
    if (code >= 100 && code <= 199 && code !== 101) {
      this.informational.push(code);
      return;
    }
    this.status = code;
    this.committed = this.header.clone();
  }
  write(b: Uint8Array): void {
    if (this.status === 0) this.writeHeader(200);
    if (b.length) this.chunks.push(Uint8Array.from(b));
  }
  finish(): ClientResponse {
    if (this.status === 0) this.writeHeader(200);
    const body = this.chunks.length ? concat(this.chunks) : EMPTY;
    return new Response(this.status, this.committed!, body);
  }
}
const EMPTY = new Uint8Array(0);
/** A class rather than closures: the bench drives millions of these. */
class Response implements ClientResponse {
  constructor(
    readonly status: number,
    readonly headers: GoHeader,
    readonly body: Uint8Array,
  ) {}
  text(): string {
    return Buffer.from(this.body).toString("utf8");
  }
  json(): any {
    return JSON.parse(this.text());
  }
  header(name: string): string | undefined {
    return this.headers.get(name);
  }
}
class BufferingWriter {
  statusCode = 0;
  body: Uint8Array[] = [];
  constructor(readonly delegate: ClientWriter) {}
  get header(): GoHeader {
    return this.delegate.header;
  }
  writeHeader(code: number): void {
    this.statusCode = code;
  }
  write(b: Uint8Array): void {
    if (b.length) this.body.push(Uint8Array.from(b));
  }
  release(): void {
    if (this.statusCode !== 0) this.delegate.writeHeader(this.statusCode);
    if (this.body.length) this.delegate.write(concat(this.body));
  }
}
type Writer = ClientWriter | BufferingWriter;

// ---- per-request state (handler.requestState + nethttp.requestState) ----

class RequestState {
  afterNext = false;
  /** handler-level features, checked by the phase rules. */
  features: number;
  /** nethttp-level features, which decide the buffering wrappers. */
  netFeatures = 0;
  method: string;
  uri: string;
  protocol: string;
  host: string;
  header: GoHeader;
  body: RequestBody;
  /** The body as read from the client's connection. */
  readonly clientBody: ServerBody;
  contentLength: number; // -1 unknown
  sourceAddr: string;
  w: Writer;
  client: ClientWriter;
  requestBodyReader?: RequestBody;
  requestBodyWriter?: Uint8Array[];
  /** Bytes written since `body` was last rebuilt from requestBodyWriter. */
  requestBodyWritten = false;
  responseBodyReader?: ServerBody;
  responseBodyWriterSet = false;
  exchange: Exchange;

  constructor(init: HostRequestInit, mwFeatures: number, handlerFeatures: number, exchange: Exchange) {
    this.features = mwFeatures;
    this.exchange = exchange;
    this.method = init.method ?? "GET";
    this.uri = init.uri ?? "/mcp";
    this.protocol = init.protocol ?? "HTTP/1.1";
    this.host = init.host ?? "";
    this.sourceAddr = init.sourceAddr ?? "127.0.0.1:40000";
    const h = new GoHeader();
    if (init.headers)
      for (const [k, vs] of GoHeader.from(init.headers).map) for (const v of vs) h.add(utf8ToBytes(k), utf8ToBytes(v));
    // Go's server promotes the Host header to r.Host and removes it from the map.
    if (!this.host) this.host = h.get("Host") ?? "localhost";
    h.del("Host");
    const data = init.body === undefined ? new Uint8Array(0) : enc(init.body);
    if (init.chunked) {
      h.del("Transfer-Encoding");
      h.del("Content-Length");
      this.contentLength = -1;
    } else {
      if (!h.has("Content-Length") && data.length > 0) h.set("Content-Length", String(data.length));
      this.contentLength = data.length;
    }
    this.header = h;
    this.body = this.clientBody = new ServerBody(data, !init.chunked);
    this.client = new ClientWriter();
    this.w = this.client;
    this.enableNetFeatures(handlerFeatures);
  }

  /** nethttp requestState.enableFeatures. */
  enableNetFeatures(features: number): void {
    this.netFeatures |= features;
    if (features & FEATURE_BUFFER_REQUEST) this.body = new BufferingRequestBody(this.body as ServerBody);
    if (this.netFeatures & FEATURE_BUFFER_RESPONSE && !(this.w instanceof BufferingWriter))
      this.w = new BufferingWriter(this.client);
  }
}

// ---- a deterministic random source like wazero's default (same bytes for every instance) ----

class FakeRand {
  private s = 42n;
  fill(out: Uint8Array): void {
    for (let i = 0; i < out.length; i++) {
      // splitmix64
      this.s = (this.s + 0x9e3779b97f4a7c15n) & 0xffffffffffffffffn;
      let z = this.s;
      z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & 0xffffffffffffffffn;
      z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & 0xffffffffffffffffn;
      out[i] = Number((z ^ (z >> 31n)) & 0xffn);
    }
  }
}

let devNull: number | undefined;
const nullFd = () => (devNull ??= openSync("/dev/null", "r+"));

const ERRNO_SUCCESS = 0;
const ERRNO_FAULT = 21;
const ERRNO_INVAL = 28;
const ERRNO_NOTSUP = 58;

/** One guest instance. */
export class HttpWasmHost {
  readonly logs: LogEntry[] = [];
  readonly instance: WebAssembly.Instance;
  readonly memory: WebAssembly.Memory;
  readonly wasi: WASI;
  /** proc_exit closed this instance: every later request errs (500), as on a closed wazero module. */
  closed?: GuestExit;
  requests = 0;
  /** WASI calls the guest made, by function name (what a request costs the host in file calls). */
  readonly wasiCalls = new Map<string, number>();
  private state?: RequestState;
  private u8: Uint8Array;
  private dv: DataView;
  private readonly handleRequestFn: () => bigint;
  private readonly handleResponseFn: (reqCtx: number, isError: number) => void;
  private readonly clock: HostClock;
  private readonly rand = new FakeRand();
  private monotonic = -1_000_000n;
  private starting = true;

  static create(opts: HostOptions | MiddlewareState): HttpWasmHost {
    const mw = opts instanceof MiddlewareState ? opts : new MiddlewareState(opts);
    return new HttpWasmHost(mw);
  }

  private constructor(readonly mw: MiddlewareState) {
    const opts = mw.opts;
    this.clock = opts.clock ?? new OffsetClock();
    this.wasi = new WASI({
      version: "preview1",
      args: [],
      env: opts.env ?? {},
      preopens: opts.mounts ?? {},
      returnOnExit: true,
      stdin: nullFd(),
      stdout: nullFd(),
      stderr: nullFd(),
    });
    const wasiImports = (this.wasi.getImportObject() as Record<string, Record<string, HostFunction>>)
      .wasi_snapshot_preview1!;
    const counted = Object.fromEntries(
      Object.entries({ ...wasiImports, ...this.wazeroSys() }).map(([name, fn]) => [
        name,
        (...args: never[]) => {
          this.wasiCalls.set(name, (this.wasiCalls.get(name) ?? 0) + 1);
          return (fn as (...a: never[]) => unknown)(...args);
        },
      ]),
    );
    const imports: WebAssembly.Imports = {
      wasi_snapshot_preview1: counted,
      http_handler: this.hostFunctions(),
    };
    // Unknown modules (env, ...) fail to link, as wazero fails to instantiate them.
    for (const imp of WebAssembly.Module.imports(mw.module)) {
      const mod = (imports as Record<string, Record<string, unknown>>)[imp.module];
      if (!mod) throw new Error(`wasm: error instantiating guest: module[${imp.module}] not instantiated`);
      if (!(imp.name in mod))
        throw new Error(`wasm: error instantiating guest: "${imp.name}" is not exported in module "${imp.module}"`);
    }
    this.instance = new WebAssembly.Instance(mw.module, imports);
    const ex = this.instance.exports;
    this.memory = ex.memory as WebAssembly.Memory;
    this.u8 = new Uint8Array(this.memory.buffer);
    this.dv = new DataView(this.memory.buffer);
    this.handleRequestFn = ex.handle_request as () => bigint;
    this.handleResponseFn = ex.handle_response as (a: number, b: number) => void;
    // wazero WithStartFunctions("_start", "_initialize"); node:wasi binds memory in start/initialize.
    const hasStart = typeof ex._start === "function";
    const hasInit = typeof ex._initialize === "function";
    try {
      if (hasStart && hasInit) {
        throw new Error("guest exports both _start and _initialize: not supported by this host");
      } else if (hasStart) this.wasi.start(this.instance);
      else this.wasi.initialize(this.instance);
    } catch (e) {
      throw new Error(`wasm: error instantiating guest: ${(e as Error).message}`, { cause: e });
    } finally {
      this.starting = false;
    }
    if (this.closed) throw new Error(`wasm: error instantiating guest: ${this.closed.message}`);
  }

  /** Linear memory size in bytes right now. */
  get memoryBytes(): number {
    return this.memory.buffer.byteLength;
  }

  /** One HTTP request through the guest, as nethttp's guest.ServeHTTP does. */
  handle(init: HostRequestInit, next?: NextHandler): Exchange {
    const ex: Exchange = {
      ctxNext: 0n,
      reqCtx: 0,
      nextCalled: false,
      response: undefined as unknown as ClientResponse,
      features: 0,
      responseBuffered: false,
      logs: [],
      headerWrites: [],
      violations: [],
    };
    const s = new RequestState(init, this.mw.features, this.mw.handlerFeatures, ex);
    this.state = s;
    this.requests++;
    try {
      let ctxNext = 0n;
      try {
        if (this.closed) throw this.closed;
        ctxNext = BigInt.asUintN(64, this.handleRequestFn());
      } catch (e) {
        ex.trap = asError(e);
        ctxNext = 0n;
        // handleErr: 500 with the error text (ignored if the guest already committed a status).
        try {
          s.client.writeHeader(500);
        } catch {
          /* unreachable: 500 is valid */
        }
        s.client.write(Buffer.from(ex.trap.message));
      }
      ex.ctxNext = ctxNext;
      // ServeHTTP: a buffering writer in place after handle_request is released at the very end.
      const buffered = s.w instanceof BufferingWriter ? s.w : undefined;
      ex.responseBuffered = buffered !== undefined;
      const nextFlag = Number(ctxNext & 0xffffffffn);
      ex.reqCtx = Number(ctxNext >> 32n);
      if (nextFlag === 0) {
        if (ex.reqCtx !== 0)
          ex.violations.push(
            "handle_request returned next=0 with a non-zero reqCtx: the host never returns this instance to its pool",
          );
      } else {
        ex.nextCalled = true;
        this.runNext(s, ex, next);
      }
      buffered?.release();
      if (ex.responseTrap && s.client.status === 0) s.client.writeHeader(500); // Traefik's recovery
      ex.features = s.features;
      ex.response = s.client.finish();
      return ex;
    } finally {
      this.state = undefined;
    }
  }

  // ------------------------------------------------------------------ WASI (wazero defaults)

  private wazeroSys(): Record<string, HostFunction> {
    return {
      clock_time_get: (id: number, _precision: bigint, resultPtr: number): number => {
        let t: bigint;
        if (id === 0) t = this.clock.nowNs();
        else if (id === 1)
          t = this.monotonic += 1_000_000n; // fake nanotime: +1 ms per reading
        else return ERRNO_INVAL;
        if (!this.inRange(resultPtr >>> 0, 8)) return ERRNO_FAULT;
        this.view().setBigUint64(resultPtr >>> 0, t, true);
        return ERRNO_SUCCESS;
      },
      random_get: (buf: number, len: number): number => {
        buf >>>= 0;
        len >>>= 0;
        if (!this.inRange(buf, len)) return ERRNO_FAULT;
        this.rand.fill(this.mem().subarray(buf, buf + len));
        return ERRNO_SUCCESS;
      },
      poll_oneoff: (inPtr: number, outPtr: number, nsub: number, neventsPtr: number): number => {
        inPtr >>>= 0;
        outPtr >>>= 0;
        nsub >>>= 0;
        if (nsub === 0) return ERRNO_INVAL;
        if (!this.inRange(inPtr, nsub * 48) || !this.inRange(outPtr, nsub * 32) || !this.inRange(neventsPtr >>> 0, 4))
          return ERRNO_FAULT;
        const dv = this.view();
        // Clock subscriptions fire at once (fake nanosleep); fd ones are not supported here.
        for (let i = 0; i < nsub; i++) {
          const sub = inPtr + i * 48;
          const ev = outPtr + i * 32;
          const tag = dv.getUint8(sub + 8);
          dv.setBigUint64(ev, dv.getBigUint64(sub, true), true);
          dv.setUint16(ev + 8, tag === 0 ? ERRNO_SUCCESS : ERRNO_NOTSUP, true);
          dv.setUint8(ev + 10, tag);
          dv.setBigUint64(ev + 16, 0n, true);
          dv.setUint16(ev + 24, 0, true);
        }
        dv.setUint32(neventsPtr >>> 0, nsub, true);
        return ERRNO_SUCCESS;
      },
      proc_exit: (code: number): never => {
        this.closed = new GuestExit(code >>> 0);
        throw this.closed;
      },
    };
  }

  // ------------------------------------------------------------------ memory helpers

  private mem(): Uint8Array {
    if (this.u8.buffer !== this.memory.buffer) {
      this.u8 = new Uint8Array(this.memory.buffer);
      this.dv = new DataView(this.memory.buffer);
    }
    return this.u8;
  }
  private view(): DataView {
    this.mem();
    return this.dv;
  }
  private inRange(off: number, len: number): boolean {
    return off + len <= this.mem().length;
  }
  /** mustRead: out of range panics. */
  private mustRead(field: string, off: number, len: number): Uint8Array {
    off >>>= 0;
    len >>>= 0;
    if (len === 0) return new Uint8Array(0);
    if (!this.inRange(off, len)) throw new HostPanic(`out of memory reading ${field}`);
    return this.mem().subarray(off, off + len);
  }
  private mustReadString(field: string, off: number, len: number): string {
    return Buffer.from(this.mustRead(field, off, len)).toString("latin1");
  }
  /** writeStringIfUnderLimit / writeIfUnderLimit: nothing written when too long or empty. */
  private writeIfUnderLimit(buf: number, limit: number, v: Uint8Array): number {
    buf >>>= 0;
    limit >>>= 0;
    if (v.length > limit || v.length === 0) return v.length;
    if (this.inRange(buf, v.length)) this.mem().set(v, buf);
    else this.violation(`write of ${v.length} bytes out of memory range ignored (Memory.Write returns false)`);
    return v.length;
  }
  /** writeNULTerminated: count<<32|len; nothing written when len > limit. */
  private writeNULTerminated(buf: number, limit: number, values: string[]): bigint {
    buf >>>= 0;
    limit >>>= 0;
    const count = values.length;
    if (count === 0) return 0n;
    let byteCount = count;
    for (const v of values) byteCount += v.length; // byte strings: one char per byte
    const countLen = (BigInt(count) << 32n) | BigInt(byteCount);
    if (byteCount > limit) return countLen;
    if (!this.inRange(buf, byteCount)) throw new HostPanic("out of memory");
    const m = this.mem();
    let p = buf;
    for (const v of values) {
      m.set(Buffer.from(v, "latin1"), p);
      p += v.length;
      m[p++] = 0;
    }
    return countLen;
  }
  private violation(v: string): void {
    this.state?.exchange.violations.push(v);
  }

  // ------------------------------------------------------------------ phase rules

  private req(): RequestState {
    // Outside a request there is no requestState in the context: Go's type assertion panics.
    if (!this.state) throw new HostPanic("interface conversion: interface {} is nil, not *handler.requestState");
    return this.state;
  }
  private mustBeforeNext(op: string, kind: string): RequestState {
    const s = this.req();
    if (s.afterNext) throw new HostPanic(`can't ${op} ${kind} after next handler`);
    return s;
  }
  private mustBeforeNextOrFeature(feature: number, op: string, kind: string): RequestState {
    const s = this.req();
    if (s.afterNext && !(s.features & feature)) {
      const name =
        feature === FEATURE_BUFFER_REQUEST
          ? "buffer_request"
          : feature === FEATURE_BUFFER_RESPONSE
            ? "buffer_response"
            : "trailers";
      throw new HostPanic(`can't ${op} ${kind} after next handler unless ${name} is enabled`);
    }
    return s;
  }
  private mustHeaderMutable(op: string, kind: number): RequestState {
    switch (kind) {
      case HEADER_REQUEST:
        return this.mustBeforeNext(op, "request header");
      case HEADER_REQUEST_TRAILERS:
        return this.mustBeforeNext(op, "request trailer");
      case HEADER_RESPONSE:
        return this.mustBeforeNextOrFeature(FEATURE_BUFFER_RESPONSE, op, "response header");
      case HEADER_RESPONSE_TRAILERS:
        return this.mustBeforeNextOrFeature(FEATURE_BUFFER_RESPONSE, op, "response trailer");
      default:
        throw new HostPanic(`unsupported header kind: ${kind}`);
    }
  }

  // ------------------------------------------------------------------ http_handler

  private hostFunctions(): Record<string, HostFunction> {
    return {
      enable_features: (features: number): number => {
        const s = this.state;
        if (s) {
          s.features |= features;
          s.enableNetFeatures(features);
          return s.features | 0;
        }
        this.mw.features |= features;
        return this.mw.features | 0;
      },
      get_config: (buf: number, limit: number): number => {
        const c = this.mw.configBytes;
        if (!c) return 0;
        return this.writeIfUnderLimit(buf, limit, c);
      },
      log_enabled: (level: number): number => (this.logEnabled(level) ? 1 : 0),
      log: (level: number, buf: number, len: number): void => {
        if (!this.logEnabled(level)) return;
        const message = len >>> 0 ? Buffer.from(this.mustRead("message", buf, len)).toString("utf8") : "";
        const e: LogEntry = { level, levelName: LEVEL_NAMES[level] ?? String(level), message };
        this.logs.push(e);
        const max = this.mw.opts.maxLogs ?? 10_000;
        if (this.logs.length > max) this.logs.splice(0, this.logs.length - max);
        this.state?.exchange.logs.push(e);
        this.mw.opts.onLog?.(e);
      },
      get_method: (buf: number, limit: number): number =>
        this.writeIfUnderLimit(buf, limit, Buffer.from(this.req().method, "latin1")),
      set_method: (ptr: number, len: number): void => {
        const s = this.mustBeforeNext("set", "method");
        if (len >>> 0 === 0) throw new HostPanic("HTTP method cannot be empty");
        s.method = this.mustReadString("method", ptr, len);
      },
      get_uri: (buf: number, limit: number): number =>
        this.writeIfUnderLimit(buf, limit, Buffer.from(this.req().uri || "/", "latin1")),
      set_uri: (ptr: number, len: number): void => {
        const s = this.mustBeforeNext("set", "uri");
        const uri = len >>> 0 ? this.mustReadString("uri", ptr, len) : "/";
        // url.ParseRequestURI: an absolute path or an absolute URL.
        if (!uri.startsWith("/") && !/^[a-zA-Z][a-zA-Z0-9+.-]*:/.test(uri))
          throw new HostPanic(`parse "${uri}": invalid URI for request`);
        s.uri = uri;
      },
      get_protocol_version: (buf: number, limit: number): number =>
        this.writeIfUnderLimit(buf, limit, Buffer.from(this.req().protocol, "latin1")),
      get_source_addr: (buf: number, limit: number): number =>
        this.writeIfUnderLimit(buf, limit, Buffer.from(this.req().sourceAddr, "latin1")),
      get_header_names: (kind: number, buf: number, limit: number): bigint => {
        const s = this.req();
        let names: string[];
        switch (kind) {
          case HEADER_REQUEST: {
            names = s.header.keys().filter((n) => !n.startsWith(TRAILER_PREFIX));
            if (s.host !== "") names.push("Host");
            goSortStrings(names);
            break;
          }
          case HEADER_RESPONSE:
            names = goSortStrings(s.w.header.keys().filter((n) => !n.startsWith(TRAILER_PREFIX)));
            break;
          case HEADER_REQUEST_TRAILERS:
          case HEADER_RESPONSE_TRAILERS:
            // nethttp keeps both kinds of trailers in the response header map.
            names = goSortStrings(
              s.w.header
                .keys()
                .filter((n) => n.startsWith(TRAILER_PREFIX))
                .map((n) => n.slice(TRAILER_PREFIX.length)),
            );
            break;
          default:
            throw new HostPanic(`unsupported header kind: ${kind}`);
        }
        return this.writeNULTerminated(
          buf,
          limit,
          names.map((n) => n.toLowerCase()),
        );
      },
      get_header_values: (kind: number, namePtr: number, nameLen: number, buf: number, limit: number): bigint => {
        if (nameLen >>> 0 === 0) throw new HostPanic("HTTP header name cannot be empty");
        const n = this.mustReadString("name", namePtr, nameLen);
        const s = this.req();
        let values: string[];
        switch (kind) {
          case HEADER_REQUEST:
            values = canonicalHeaderKey(n) === "Host" ? [s.host] : s.header.values(n);
            break;
          case HEADER_RESPONSE:
            values = s.w.header.values(n);
            break;
          case HEADER_REQUEST_TRAILERS:
          case HEADER_RESPONSE_TRAILERS:
            values = s.w.header.values(TRAILER_PREFIX + n);
            break;
          default:
            throw new HostPanic(`unsupported header kind: ${kind}`);
        }
        return this.writeNULTerminated(buf, limit, values);
      },
      set_header_value: (kind: number, namePtr: number, nameLen: number, valuePtr: number, valueLen: number): void =>
        this.mutateHeader("set", kind, namePtr, nameLen, valuePtr, valueLen),
      add_header_value: (kind: number, namePtr: number, nameLen: number, valuePtr: number, valueLen: number): void =>
        this.mutateHeader("add", kind, namePtr, nameLen, valuePtr, valueLen),
      remove_header: (kind: number, namePtr: number, nameLen: number): void => {
        if (nameLen >>> 0 === 0) throw new HostPanic("HTTP header name cannot be empty");
        const s = this.mustHeaderMutable("remove", kind);
        const n = this.mustReadString("name", namePtr, nameLen);
        if (kind === HEADER_REQUEST) s.header.del(n);
        else if (kind === HEADER_RESPONSE) s.w.header.del(n);
        else s.w.header.del(TRAILER_PREFIX + n);
      },
      read_body: (kind: number, buf: number, limit: number): bigint => {
        let r: RequestBody;
        if (kind === BODY_REQUEST) {
          const s = this.mustBeforeNextOrFeature(FEATURE_BUFFER_REQUEST, "read", "request body");
          r = s.requestBodyReader ??= currentBody(s);
        } else if (kind === BODY_RESPONSE) {
          const s = this.mustBeforeNextOrFeature(FEATURE_BUFFER_RESPONSE, "read", "response body");
          if (!s.responseBodyReader) {
            // ResponseBodyReader type-asserts the buffering writer: without it Go panics.
            if (!(s.w instanceof BufferingWriter))
              throw new HostPanic("interface conversion: http.ResponseWriter is not *wasm.bufferingResponseWriter");
            s.responseBodyReader = bytesBody(concat(s.w.body.length ? s.w.body : [new Uint8Array(0)]));
          }
          r = s.responseBodyReader;
        } else throw new HostPanic(`unsupported body kind: ${kind}`);
        buf >>>= 0;
        limit >>>= 0;
        if (limit === 0) throw new HostPanic("buf_limit==0 reading body");
        const dst = this.mustRead("body", buf, limit);
        let n = 0;
        let eof = false;
        while (n < limit && !eof) {
          const [chunk, e] = r.read(limit - n);
          dst.set(chunk, n);
          n += chunk.length;
          eof = e;
        }
        return ((eof ? 1n : 0n) << 32n) | BigInt(n);
      },
      write_body: (kind: number, buf: number, len: number): void => {
        if (kind === BODY_REQUEST) {
          const s = this.mustBeforeNext("write", "request body");
          if (!s.requestBodyWriter) {
            s.requestBodyWriter = [];
            s.body = bytesBody(new Uint8Array(0)); // RequestBodyWriter resets r.Body
          }
          const b = len >>> 0 ? Uint8Array.from(this.mustRead("body", buf, len)) : new Uint8Array(0);
          // Appended to the same bytes.Buffer (the host keeps its writer across calls).
          s.requestBodyWriter.push(b);
          s.requestBodyWritten = true;
        } else if (kind === BODY_RESPONSE) {
          const s = this.mustBeforeNextOrFeature(FEATURE_BUFFER_RESPONSE, "write", "response body");
          const b = len >>> 0 ? Uint8Array.from(this.mustRead("body", buf, len)) : new Uint8Array(0);
          if (!s.responseBodyWriterSet) {
            s.responseBodyWriterSet = true;
            if (s.w instanceof BufferingWriter) s.w.body = []; // reset
          }
          s.w.write(b);
        } else throw new HostPanic(`unsupported body kind: ${kind}`);
      },
      get_status_code: (): number => {
        const s = this.req();
        // nethttp type-asserts the buffering writer: without buffer_response this panics.
        if (!(s.w instanceof BufferingWriter))
          throw new HostPanic("interface conversion: http.ResponseWriter is not *wasm.bufferingResponseWriter");
        return s.w.statusCode === 0 ? 200 : s.w.statusCode;
      },
      set_status_code: (code: number): void => {
        const s = this.mustBeforeNextOrFeature(FEATURE_BUFFER_RESPONSE, "set", "status code");
        if (s.w instanceof BufferingWriter) s.w.statusCode = code >>> 0;
        else s.w.writeHeader(code >>> 0);
      },
    };
  }

  private logEnabled(level: number): boolean {
    return this.mw.opts.logEnabled ? this.mw.opts.logEnabled(level) : true;
  }

  private mutateHeader(
    op: "set" | "add",
    kind: number,
    namePtr: number,
    nameLen: number,
    valuePtr: number,
    valueLen: number,
  ): void {
    if (nameLen >>> 0 === 0) throw new HostPanic("HTTP header name cannot be empty");
    const s = this.mustHeaderMutable(op, kind);
    const n = this.mustReadString("name", namePtr, nameLen);
    const v = this.mustReadString("value", valuePtr, valueLen);
    s.exchange.headerWrites.push({ kind, op, name: n, value: v });
    // Go's transport refuses such request headers and its server rewrites them in responses:
    // a guest must never produce them.
    if (/[\r\n\0]/.test(v))
      s.exchange.violations.push(
        `guest wrote ${kind === HEADER_REQUEST ? "request" : "response"} header ${JSON.stringify(n)} with CR, LF or NUL`,
      );
    if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(n))
      s.exchange.violations.push(`guest wrote an invalid header name ${JSON.stringify(n)}`);
    const h = kind === HEADER_REQUEST ? s.header : s.w.header;
    const name = kind === HEADER_REQUEST || kind === HEADER_RESPONSE ? n : TRAILER_PREFIX + n;
    if (kind === HEADER_RESPONSE_TRAILERS || kind === HEADER_REQUEST_TRAILERS)
      h.set(name, v); // nethttp's addTrailer sets too
    else if (op === "set") h.set(name, v);
    else h.add(name, v);
  }

  /** Runs the next handler and handle_response (the part of ServeHTTP after handle_request). */
  private runNext(s: RequestState, ex: Exchange, next: NextHandler | undefined): void {
    // handleNext: restore a buffered request body, then serve.
    if (s.body instanceof BufferingRequestBody) {
      s.body = s.body.bufferedLength() === 0 ? (s.body.delegate as ServerBody) : bytesBody(concat(s.body.buffer));
    }
    // What the proxy reads: a bytes.Buffer (the guest's copy, or a buffered read), or the client's stream.
    const bodyInMemory = s.requestBodyWriter !== undefined || s.body !== s.clientBody;
    const body = drain(currentBody(s));
    if (s.contentLength >= 0 && body.length !== s.contentLength)
      ex.violations.push(
        `request body is ${body.length} bytes but Content-Length says ${s.contentLength}: Go's transport fails the request`,
      );
    const fwd: ForwardedRequest = {
      method: s.method,
      uri: s.uri,
      protocol: s.protocol,
      host: s.host,
      headers: s.header.clone(),
      body,
      bodyInMemory,
      cookies: s.header.values("Cookie"),
    };
    ex.forwarded = fwd;
    let hostErr = 0;
    try {
      const up = (next ? next(fwd) : undefined) ?? {};
      // httputil.ReverseProxy: copy (add) headers, WriteHeader, then the body writes.
      if (up.headers)
        for (const [k, vs] of GoHeader.from(up.headers).map)
          for (const v of vs) s.w.header.add(utf8ToBytes(k), utf8ToBytes(v));
      s.w.writeHeader(up.status ?? 200);
      const parts = up.body === undefined ? [] : Array.isArray(up.body) ? up.body : [up.body];
      for (const p of parts) s.w.write(enc(p));
    } catch (e) {
      if (e instanceof HostPanic) throw e;
      hostErr = 1; // handleNext recovers a panic of the next handler and reports it as an error
    }
    s.afterNext = true;
    try {
      this.handleResponseFn(ex.reqCtx | 0, hostErr);
    } catch (e) {
      ex.responseTrap = asError(e);
    }
  }
}

function asError(e: unknown): Error {
  if (e instanceof Error) return e;
  return new Error(String(e));
}

/**
 * Several instances of one guest sharing one middleware (config, mounts, clock), as Traefik's pool
 * holds them. Pick an instance explicitly, or let the pool go round-robin.
 */
export class HostPool {
  readonly mw: MiddlewareState;
  readonly instances: HttpWasmHost[] = [];
  private rr = 0;
  constructor(opts: HostOptions, size = 1) {
    this.mw = new MiddlewareState(opts);
    // NewMiddleware starts one instance eagerly; NewHandler then copies the middleware features.
    this.instances.push(HttpWasmHost.create(this.mw));
    this.mw.handlerFeatures = this.mw.features;
    while (this.instances.length < size) this.grow();
  }
  /** A new instance (the pool found none idle). */
  grow(): HttpWasmHost {
    const h = HttpWasmHost.create(this.mw);
    this.instances.push(h);
    return h;
  }
  instance(i: number): HttpWasmHost {
    while (this.instances.length <= i) this.grow();
    return this.instances[i]!;
  }
  handle(init: HostRequestInit, next?: NextHandler, instance?: number): Exchange {
    const i = instance ?? this.rr++ % this.instances.length;
    return this.instance(i).handle(init, next);
  }
  get logs(): LogEntry[] {
    return this.instances.flatMap((h) => h.logs);
  }
}

/** A single instance created the way NewMiddleware creates its first one. */
export function createHost(opts: HostOptions): HttpWasmHost {
  return new HostPool(opts, 1).instances[0]!;
}

/** Runs requests through a HostPool in a worker thread (see pool-worker.ts). */
export async function runPoolInWorker(
  input: import("./pool-worker.ts").PoolWorkerInput,
): Promise<import("./pool-worker.ts").PoolWorkerResult> {
  const { Worker } = await import("node:worker_threads");
  const w = new Worker(new URL("./pool-worker.mjs", import.meta.url), { workerData: input });
  try {
    return await new Promise((resolve, reject) => {
      w.once("message", resolve);
      w.once("error", reject);
      w.once("exit", (code) => reject(new Error(`pool worker exited with code ${code} before answering`)));
    });
  } finally {
    await w.terminate();
  }
}

/** Starts every worker, waits until all have built their pools, then releases them at once. */
export async function runPoolsTogether(
  inputs: Omit<import("./pool-worker.ts").PoolWorkerInput, "gate">[],
): Promise<import("./pool-worker.ts").PoolWorkerResult[]> {
  const gate = new SharedArrayBuffer(8);
  const g = new Int32Array(gate);
  const results = inputs.map((i) => runPoolInWorker({ ...i, gate }));
  let failed: unknown;
  for (const r of results) r.catch((e) => (failed ??= e));
  const deadline = Date.now() + 30_000;
  while (Atomics.load(g, 1) < inputs.length) {
    if (failed) throw failed;
    if (Date.now() > deadline) throw new Error("pool workers did not get ready");
    await new Promise((r) => setTimeout(r, 5));
  }
  Atomics.store(g, 0, 1);
  Atomics.notify(g, 0);
  return Promise.all(results);
}
