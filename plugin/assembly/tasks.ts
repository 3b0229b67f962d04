// Task handles (the tasks extension of MCP 2026-07-28, docs/plugin.md "Tasks"): a server's task id
// travels to the client as `mt1.<token>.<task id>` and back. Two byte-level rewriters, each fed a
// body in pieces (where the pieces are cut does not matter) and writing its output to a sink the
// caller flushes: one removes the handle's head from a tasks/* request body, one inserts it into
// the answer that carries the task id. Pure: no ABI, no WASI.
import { Bytes } from "./bytes";

/** Longest server task id wrapped (a longer one is passed on as it is and routes without a token). */
export const MAX_TASK_ID: i32 = 255;
/** "mt1." + 24 hex + "." */
export const TASK_HEAD_LENGTH: i32 = 29;

const EMPTY = new Bytes(0);
/** The keys whose values carry handles (quoted, as a body has them): a task id, and the state of a multi round-trip request. */
export const TASK_ID_KEY = '"taskId"';
export const REQUEST_STATE_KEY = '"requestState"';
/** Longest key a remover looks for (quotes included). */
const MAX_KEY: i32 = 14;
/** Whitespace tolerated around a key's colon before a match is given up (JSON allows any). */
const MAX_SPACE: i32 = 16;

@inline function isJsonSpace(c: i32): bool {
  return c == 32 || c == 9 || c == 10 || c == 13;
}

/**
 * Finds a literal in a body that arrives in pieces. Only for literals whose first byte occurs
 * nowhere else in them (a `"`-delimited key or value), so a failed match restarts on that byte.
 */
export class LiteralMatcher {
  state: i32 = 0;
  found: bool = false;
  constructor(public literal: string) {}

  reset(): void {
    this.state = 0;
    this.found = false;
  }

  feed(b: Bytes): void {
    const lit = this.literal;
    const n = lit.length;
    const first = lit.charCodeAt(0);
    let st = this.state;
    for (let i = 0; i < b.len && !this.found; i++) {
      const c = <i32>b.at(i);
      if (c == lit.charCodeAt(st)) st++;
      else st = c == first ? 1 : 0;
      if (st == n) this.found = true;
    }
    this.state = st;
  }
}

/** A body rewriter: fed a body in pieces, it appends what goes on in their place to `out`. */
export abstract class BodyRewriter {
  abstract feed(b: Bytes, start: i32, end: i32, out: Bytes): void;
  /** The body ended: whatever is still held goes out. */
  abstract end(out: Bytes): void;
}

// TaskHeadRemover states: 0 scanning, 1..key length - 1 inside the key, then (as offsets past
// the key's length):
const R_AFTER_KEY: i32 = 0; // whitespace or ':'
const R_AFTER_COLON: i32 = 1; // whitespace or the value's opening quote
const R_HEAD: i32 = 2; // comparing the value's first bytes with the head

@inline function isLowerHex(c: i32): bool {
  return (c >= 48 && c <= 57) || (c >= 97 && c <= 102);
}

/**
 * Removes a handle's head (29 bytes, `mt1.<24 hex>.`) from every `"<key>": "<head>...` of a request
 * body, so the node reads its own value; JSON whitespace before the value takes the head's place,
 * so the body keeps its length. The head is given (a task request's Mcp-Name), or learned from the
 * first value that has one (a requestState, which no header mirrors). Counts what it saw:
 * `removed` heads, and `foreign` values that start like a handle but not this one (another node's).
 * A body that removed none, or saw a foreign one, does not match its Mcp-Name.
 */
export class TaskHeadRemover extends BodyRewriter {
  /** The head removed: its first TASK_HEAD_LENGTH bytes (the caller's buffer, or `learned`). */
  head: Bytes = EMPTY;
  /** The head learned from the body when none was given. */
  learned: Bytes = new Bytes(TASK_HEAD_LENGTH);
  key: string = "";
  /** Bytes of a possible match not yet written: the key, the spaces and colon, the opening quote. */
  held: Bytes = new Bytes(MAX_KEY + 2 * MAX_SPACE + 2);
  state: i32 = 0;
  matched: i32 = 0;
  prev: i32 = 0;
  removed: i32 = 0;
  foreign: bool = false;

  /** Removes `head`'s head from the values of `key` (quoted); with `head` null, the first head found in them. */
  begin(key: string, head: Bytes | null): void {
    this.key = key;
    this.head = head != null ? head : EMPTY;
    this.learned.clear();
    this.held.clear();
    this.state = 0;
    this.matched = 0;
    this.prev = 0;
    this.removed = 0;
    this.foreign = false;
  }

  /** Appends the rewritten form of b[start, end) to `out` (room needed: end - start + 2 * TASK_HEAD_LENGTH + MAX_SPACE). */
  feed(b: Bytes, start: i32, end: i32, out: Bytes): void {
    for (let i = start; i < end; i++) this.byte(<i32>b.at(i), out);
  }

  /** The body ended: whatever was held is written as it came. */
  end(out: Bytes): void {
    this.giveUp(out);
  }

  /** Whether byte `c` continues the head at position k: the given (or learned) head, else any. */
  private headByte(k: i32, c: i32): bool {
    if (this.head.len >= TASK_HEAD_LENGTH) return c == <i32>this.head.at(k);
    if (k < 4) return c == "mt1.".charCodeAt(k);
    if (k < TASK_HEAD_LENGTH - 1) return isLowerHex(c);
    return c == 46;
  }

  private byte(c: i32, out: Bytes): void {
    const st = this.state;
    const keyLen = this.key.length;
    if (st == 0) {
      // A quote after a backslash is inside a string: no key starts there.
      if (c == 34 && this.prev != 92) {
        this.held.pushByte(<u8>c);
        this.state = 1;
      } else out.pushByte(<u8>c);
    } else if (st < keyLen) {
      if (c == this.key.charCodeAt(st)) {
        this.held.pushByte(<u8>c);
        this.state = st + 1;
      } else this.retry(c, out);
    } else if (st == keyLen + R_AFTER_KEY || st == keyLen + R_AFTER_COLON) {
      if (isJsonSpace(c) && this.held.len < this.held.buf.length - 2) this.held.pushByte(<u8>c);
      else if (st == keyLen + R_AFTER_KEY && c == 58) {
        this.held.pushByte(<u8>c);
        this.state = keyLen + R_AFTER_COLON;
      } else if (st == keyLen + R_AFTER_COLON && c == 34) {
        this.held.pushByte(<u8>c);
        this.state = keyLen + R_HEAD;
        this.matched = 0;
      } else this.retry(c, out);
    } else {
      // R_HEAD: the value so far is head[0, matched).
      const k = this.matched;
      if (this.headByte(k, c)) {
        if (this.head.len < TASK_HEAD_LENGTH) this.learned.pushByte(<u8>c);
        this.matched = k + 1;
        if (this.matched == TASK_HEAD_LENGTH) {
          if (this.head.len < TASK_HEAD_LENGTH) this.head = this.learned;
          // The head goes; the value's opening quote moves past whitespace of the head's length, so
          // the body keeps its length (the proxy sends it with the Content-Length the client gave).
          out.pushBytes(this.held, 0, this.held.len - 1);
          for (let i = 0; i < TASK_HEAD_LENGTH; i++) out.pushByte(32);
          out.pushByte(34);
          this.held.clear();
          this.removed++;
          this.state = 0;
        }
      } else {
        // "mt1." and then something else: a handle, but another node's (or a mangled one).
        if (k >= 4) this.foreign = true;
        this.retry(c, out);
        return;
      }
    }
    this.prev = c;
  }

  /** Not a match after all: write what was held, then read `c` afresh (it may open a key). */
  private retry(c: i32, out: Bytes): void {
    this.giveUp(out);
    this.prev = 0;
    this.byte(c, out);
  }

  private giveUp(out: Bytes): void {
    out.pushBytes(this.held, 0, this.held.len);
    if (this.state == this.key.length + R_HEAD) {
      // The value's first bytes, as they came (the given head, or what was being learned).
      out.pushBytes(this.head.len >= TASK_HEAD_LENGTH ? this.head : this.learned, 0, this.matched);
      if (this.head.len < TASK_HEAD_LENGTH) this.learned.clear();
    }
    this.held.clear();
    this.state = 0;
    this.matched = 0;
  }
}

/** What a TaskIdWrapper wraps: a new handle (a CreateTaskResult's task id, an InputRequiredResult's requestState), or the echo of a known task id. */
export const WRAP_CREATED: i32 = 0;
export const WRAP_ECHO: i32 = 1;

/** Most bytes held after a value's opening quote while it is not yet known whether to wrap it. */
export const HOLD_BYTES: i32 = 1024;

// Which key of the result object the value being read belongs to.
const K_OTHER: i32 = 0;
const K_RESULT_TYPE: i32 = 1;
const K_TASK_ID: i32 = 2;
const K_STATE: i32 = 3;
// The result's resultType.
const RT_UNKNOWN: i32 = 0;
const RT_TASK: i32 = 1;
const RT_INPUT: i32 = 2;
const RT_OTHER: i32 = 3;
const KEY_CAPTURE: i32 = 16; // longer than "requestState" and "input_required"

/**
 * Inserts a task handle's head into the `taskId` of a JSON-RPC answer (a JSON body, or the `data:`
 * lines of an SSE answer, one message per event): with WRAP_CREATED, the result's `taskId` when
 * the same result says `"resultType": "task"` (a CreateTaskResult, whatever the key order); with
 * WRAP_ECHO, the result's `taskId` when it equals the task id the request named (tasks/get).
 * Only keys of the message's `result` object count, so a tool's own data is never touched, and
 * only ids of visible ASCII without escapes, at most MAX_TASK_ID long. From a task id's opening
 * quote until the decision (at most HOLD_BYTES), output is held back; nothing else is.
 * The buffers it reads and holds in are the caller's (an instance must stay within its first page).
 */
export class TaskIdWrapper extends BodyRewriter {
  /** The head to insert: its first TASK_HEAD_LENGTH bytes. */
  head: Bytes = EMPTY;
  /** WRAP_ECHO: the task id is echo[echoStart, echo.len). */
  echo: Bytes = EMPTY;
  echoStart: i32 = 0;
  hold: Bytes = EMPTY;
  holdLimit: i32 = 0;
  mode: i32 = WRAP_CREATED;
  sse: bool = false;
  /** WRAP_CREATED: which new handles are wrapped (a task id, a requestState). */
  wrapTasks: bool = true;
  wrapStates: bool = false;
  /** Task ids wrapped so far (each adds TASK_HEAD_LENGTH bytes to the body). */
  wrapped: i32 = 0;
  /** Task ids left as they were because the decision did not come within HOLD_BYTES. */
  overflowed: i32 = 0;

  // SSE framing: position in "data:" at a line's start (-1: inside a line that is not data).
  private line: i32 = 0;
  private dataSpace: bool = false;
  private lastCR: bool = false;
  // JSON scanning of the current message.
  private depth: i32 = 0;
  private objects: u32 = 0; // bit d: the container at depth d is an object
  private inString: bool = false;
  private escaped: bool = false;
  private expectKey: bool = false;
  private stringIsKey: bool = false;
  private captured: Bytes = new Bytes(KEY_CAPTURE);
  private capturing: bool = false;
  private captureOverflow: bool = false;
  private key1IsResult: bool = false;
  private inResult: bool = false;
  private key2: i32 = K_OTHER;
  /** The result's resultType, once read (RT_*). */
  private resultType: i32 = RT_UNKNOWN;
  /** The key whose value is held (K_TASK_ID or K_STATE). */
  private heldKey: i32 = K_OTHER;
  // The task id value being held.
  private holding: bool = false;
  private idOpen: bool = false;
  private idLen: i32 = 0;
  private idSafe: bool = true;
  private idComplete: bool = false;
  private done: bool = false;

  /**
   * WRAP_CREATED: a result's `taskId` when its resultType is "task" (with `tasks`), its
   * `requestState` when its resultType is "input_required" (with `states`). WRAP_ECHO: a result's
   * `taskId` equal to the echo (setEcho).
   */
  begin(mode: i32, head: Bytes, sse: bool, hold: Bytes, tasks: bool, states: bool): void {
    this.mode = mode;
    this.wrapTasks = tasks || mode == WRAP_ECHO;
    this.wrapStates = states && mode == WRAP_CREATED;
    this.head = head;
    this.hold = hold;
    hold.clear();
    this.holdLimit = min<i32>(hold.buf.length, HOLD_BYTES);
    this.sse = sse;
    this.wrapped = 0;
    this.overflowed = 0;
    this.line = 0;
    this.dataSpace = false;
    this.lastCR = false;
    this.resetMessage();
  }

  /** For WRAP_ECHO: the task id (unwrapped) whose echo is wrapped is id[start, id.len). */
  setEcho(id: Bytes, start: i32): void {
    this.echo = id;
    this.echoStart = start;
  }

  /** Appends the rewritten form of b[start, end) to `out` (room needed: end - start + HOLD_BYTES + TASK_HEAD_LENGTH + 1). */
  feed(b: Bytes, start: i32, end: i32, out: Bytes): void {
    for (let i = start; i < end; i++) {
      const c = <i32>b.at(i);
      if (this.sse) this.sseByte(c, out);
      else this.jsonByte(c, out);
    }
  }

  /** The body ended: a held task id is written as it came. */
  end(out: Bytes): void {
    this.release(false, out);
  }

  private resetMessage(): void {
    this.depth = 0;
    this.objects = 0;
    this.inString = false;
    this.escaped = false;
    this.expectKey = false;
    this.stringIsKey = false;
    this.capturing = false;
    this.key1IsResult = false;
    this.inResult = false;
    this.key2 = K_OTHER;
    this.resultType = RT_UNKNOWN;
    this.heldKey = K_OTHER;
    this.holding = false;
    this.idOpen = false;
    this.idComplete = false;
    this.done = false;
  }

  private sseByte(c: i32, out: Bytes): void {
    if (c == 10 || c == 13) {
      // A blank line ends an event: one JSON-RPC message per event (CR LF is one line end).
      const crlf = c == 10 && this.lastCR;
      this.lastCR = c == 13;
      if (this.line == 0 && !crlf) {
        this.release(false, out);
        this.resetMessage();
      }
      this.line = 0;
      this.emit(c, out);
      return;
    }
    this.lastCR = false;
    const l = this.line;
    if (l >= 0 && l < 5) {
      this.line = c == <i32>"data:".charCodeAt(l) ? l + 1 : -1;
      this.dataSpace = true;
      this.emit(c, out);
      return;
    }
    if (l == 5) {
      this.line = 6;
      // One space after "data:" belongs to the framing.
      if (c == 32 && this.dataSpace) {
        this.dataSpace = false;
        this.emit(c, out);
        return;
      }
    }
    if (this.line < 0) {
      this.emit(c, out);
      return;
    }
    this.jsonByte(c, out);
  }

  private emit(c: i32, out: Bytes): void {
    if (!this.holding) {
      out.pushByte(<u8>c);
      return;
    }
    if (this.hold.len >= this.holdLimit) {
      this.overflowed++;
      this.release(false, out);
      out.pushByte(<u8>c);
      return;
    }
    this.hold.pushByte(<u8>c);
  }

  /** Ends holding: the head first when `wrap`, then what was held. */
  private release(wrap: bool, out: Bytes): void {
    if (!this.holding) return;
    if (wrap) {
      out.pushBytes(this.head, 0, TASK_HEAD_LENGTH);
      this.wrapped++;
    }
    out.pushBytes(this.hold, 0, this.hold.len);
    this.hold.clear();
    this.holding = false;
    this.idOpen = false;
    this.done = true;
  }

  /** A decision can be made once the id is read and (for a created task) the result type known. */
  private decide(out: Bytes): void {
    if (!this.holding || !this.idComplete) return;
    const max = this.heldKey == K_STATE ? HOLD_BYTES : MAX_TASK_ID;
    const usable = this.idSafe && this.idLen > 0 && this.idLen <= max;
    if (this.mode == WRAP_ECHO) {
      this.release(usable && this.idLen == this.echo.len - this.echoStart, out);
      return;
    }
    if (this.resultType == RT_UNKNOWN) return;
    const wanted = this.heldKey == K_STATE ? RT_INPUT : RT_TASK;
    this.release(usable && this.resultType == wanted, out);
  }

  private jsonByte(c: i32, out: Bytes): void {
    if (this.inString) {
      if (this.escaped) this.escaped = false;
      else if (c == 92) {
        this.escaped = true;
        if (this.idOpen) this.idSafe = false;
        this.captureOverflow = true;
      } else if (c == 34) {
        this.inString = false;
        this.emit(c, out);
        this.stringEnd(out);
        return;
      } else this.stringByte(c);
      this.emit(c, out);
      return;
    }
    if (c == 34) {
      this.inString = true;
      this.escaped = false;
      this.emit(c, out);
      this.stringStart();
      return;
    }
    if (c == 123 || c == 91) {
      this.depth++;
      if (this.depth < 32) {
        if (c == 123) this.objects |= 1 << this.depth;
        else this.objects &= ~(1 << this.depth);
      }
      this.expectKey = c == 123;
      if (this.depth == 2) {
        this.inResult = c == 123 && this.key1IsResult;
        this.key2 = K_OTHER;
      }
    } else if (c == 125 || c == 93) {
      if (this.depth == 2 && this.inResult) {
        // The result object ends: an id still held was not a created task's.
        this.emit(c, out);
        this.release(false, out);
        this.inResult = false;
        this.depth--;
        this.expectKey = false;
        return;
      }
      this.depth--;
      this.expectKey = false;
    } else if (c == 44) {
      this.expectKey = this.inObject();
    }
    this.emit(c, out);
  }

  private inObject(): bool {
    return this.depth > 0 && this.depth < 32 && (this.objects & (1 << this.depth)) != 0;
  }

  private stringStart(): void {
    this.stringIsKey = this.expectKey && this.inObject();
    this.expectKey = false;
    this.capturing = false;
    if (this.stringIsKey) {
      if (this.depth == 1 || (this.depth == 2 && this.inResult)) this.startCapture();
      return;
    }
    if (this.depth != 2 || !this.inResult) return;
    if (this.key2 == K_RESULT_TYPE) this.startCapture();
    else if ((this.key2 == K_TASK_ID || this.key2 == K_STATE) && !this.done && !this.holding) {
      this.heldKey = this.key2;
      // The value's opening quote is out; what follows is held until the decision.
      this.holding = true;
      this.idOpen = true;
      this.idLen = 0;
      this.idSafe = true;
      this.idComplete = false;
    }
  }

  private startCapture(): void {
    this.captured.clear();
    this.capturing = true;
    this.captureOverflow = false;
  }

  private stringByte(c: i32): void {
    if (this.idOpen) {
      const k = this.idLen;
      if (c < 0x21 || c > 0x7e) this.idSafe = false;
      const e = this.echoStart + k;
      if (this.mode == WRAP_ECHO && (e >= this.echo.len || <i32>this.echo.at(e) != c)) this.idSafe = false;
      this.idLen = k + 1;
    }
    if (this.capturing) {
      if (this.captured.len < KEY_CAPTURE) this.captured.pushByte(<u8>c);
      else this.captureOverflow = true;
    }
  }

  private stringEnd(out: Bytes): void {
    if (this.idOpen) {
      this.idOpen = false;
      this.idComplete = true;
      this.decide(out);
      return;
    }
    if (!this.capturing) return;
    this.capturing = false;
    const exact = !this.captureOverflow;
    if (this.stringIsKey) {
      if (this.depth == 1) this.key1IsResult = exact && this.capturedIs("result");
      else this.key2 = exact ? this.keyOf() : K_OTHER;
      return;
    }
    // The value of "resultType" in the result.
    this.resultType = !exact ? RT_OTHER : this.capturedIs("task") ? RT_TASK : this.capturedIs("input_required") ? RT_INPUT : RT_OTHER;
    this.decide(out);
  }

  /** The result key just read, among those this wrapper looks at. */
  private keyOf(): i32 {
    if (this.capturedIs("resultType")) return K_RESULT_TYPE;
    if (this.wrapTasks && this.capturedIs("taskId")) return K_TASK_ID;
    if (this.wrapStates && this.capturedIs("requestState")) return K_STATE;
    return K_OTHER;
  }

  private capturedIs(s: string): bool {
    if (this.captured.len != s.length) return false;
    for (let i = 0; i < s.length; i++) if (<i32>this.captured.at(i) != s.charCodeAt(i)) return false;
    return true;
  }
}
