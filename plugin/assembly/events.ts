// Events for the sidecar (docs/registry-view.md): learned sessions, closes, decision counts.
// Each batch is one file created O_EXCL in a bounded ring of slots, written with one write.
// Two channels with their own slots: batches carrying learns/closes (s-<slot>.evt) never compete
// with decision counts (e-<slot>.evt), which any client can drive in volume.
import { Bytes } from "./bytes";
import { log, LOG_ERROR } from "./abi";
import { openWrite, writeAll, close, mkdir, ERRNO_EXIST, ERRNO_NOENT } from "./wasi";
import { REASONS, REASON_COUNT, isFrequentReason } from "./core";

const PROBES: u32 = 16;

// How a POST body went to the node: copied into memory first, or streamed as it came (chunked, or
// larger than maxBufferedBodyBytes). Index into BODY_KINDS; `b` lines of a batch.
export const BODY_BUFFERED: i32 = 0;
export const BODY_STREAMED: i32 = 1;
const BODY_KINDS: StaticArray<string> = ["buffered", "streamed"];

const MAX_TOUCH_BYTES: i32 = 1024;
const TOUCH_SLOTS: i32 = 16;
/** A session's activity is reported at most this often per instance. */
const TOUCH_EVERY_MS: u64 = 60000;
const MAX_PENDING_BYTES: i32 = 6144; // a batch stays under the documented 8 KiB

/** One `<tag><name> <count>` line per non-zero count. */
function pushCounts(o: Bytes, tag: string, names: StaticArray<string>, counts: StaticArray<u32>): void {
  for (let i = 0; i < counts.length; i++) {
    const n = unchecked(counts[i]);
    if (n == 0) continue;
    o.pushAscii(tag);
    o.pushAscii(names[i]);
    o.pushByte(32);
    o.pushU64(n);
    o.pushByte(10);
  }
}

/** One `<kind> <id> <hash hex> <cookie or ->` line (`l`, `c`, `v`). */
export function pushSessionLine(o: Bytes, kind: string, id: Bytes, idStart: i32, idEnd: i32, hashHex: Bytes, cookie: string): void {
  o.pushAscii(kind);
  o.pushByte(32);
  o.pushBytes(id, idStart, idEnd);
  o.pushByte(32);
  o.pushBytes(hashHex, 0, hashHex.len);
  o.pushByte(32);
  o.pushAscii(cookie.length > 0 ? cookie : "-");
  o.pushByte(10);
}

export class EventLog {
  counts: StaticArray<u32> = new StaticArray<u32>(REASON_COUNT);
  /** POSTs with a body, by how the body went on: [buffered, streamed]. */
  bodies: StaticArray<u32> = new StaticArray<u32>(2);
  /** Answers of wrapped sessions that showed the client the server's own id (`w` line). */
  exposed: u32 = 0;
  pendingCounts: u32 = 0;
  /** A rare decision is pending: the next maybeFlush writes at once. */
  urgent: bool = false;
  /** The last write found every slot taken: rare decisions wait for flushMs too, until one succeeds. */
  full: bool = false;
  /** Learn/close lines lost because the session channel had no free slot (reported as `x`). */
  dropped: u32 = 0;
  /** Learn/close lines queued in `lines`. */
  lineCount: u32 = 0;
  /** Slots of the session channel (setting maxSessionEventFiles). */
  sessionSlots: u32 = 4096;
  private lossLogged: bool = false;
  lastFlush: u64 = 0;
  seq: u32 = 0;
  /** Pending `l`/`c` lines (session ids in clear: only ever written into events/). */
  lines: Bytes = new Bytes(512);
  /** Pending `a` lines (activity of held sessions; best effort: overflow is dropped). */
  touches: Bytes = new Bytes(128);
  private touchKeys: StaticArray<u64> = new StaticArray<u64>(TOUCH_SLOTS);
  private touchAt: StaticArray<u64> = new StaticArray<u64>(TOUCH_SLOTS);
  private touchNext: i32 = 0;
  private out: Bytes = new Bytes(1024);
  private path: Bytes = new Bytes(64);

  constructor(public dirfd: i32, public flushMs: u64, public slots: u32) {}

  count(reason: i32): void {
    unchecked(this.counts[reason] += 1);
    this.pendingCounts++;
    if (!isFrequentReason(reason)) this.urgent = true;
  }

  countBody(kind: i32): void {
    unchecked(this.bodies[kind] += 1);
    this.pendingCounts++;
  }

  countExposed(): void {
    this.exposed++;
    this.pendingCounts++;
  }

  /** Queues an `l` or `c` line; a line that would overflow the batch is dropped and counted. */
  addLine(kind: string, id: Bytes, idStart: i32, idEnd: i32, hashHex: Bytes, cookie: string): void {
    const need = 4 + (idEnd - idStart) + hashHex.len + cookie.length;
    if (this.lines.len + need > MAX_PENDING_BYTES) {
      this.lose(1);
      return;
    }
    this.lineCount++;
    pushSessionLine(this.lines, kind, id, idStart, idEnd, hashHex, cookie);
  }

  /**
   * Notes that a held session was used (`key`: the first 8 bytes of its hash): an `a` line at most
   * once per TOUCH_EVERY_MS per instance, sent with the next batch of counts.
   */
  touch(key: u64, id: Bytes, idLen: i32, hashHex: Bytes, now: u64): void {
    for (let i = 0; i < TOUCH_SLOTS; i++) {
      if (unchecked(this.touchKeys[i]) == key && now - unchecked(this.touchAt[i]) < TOUCH_EVERY_MS) return;
    }
    if (this.touches.len + 4 + idLen + hashHex.len > MAX_TOUCH_BYTES) return;
    const slot = this.touchNext;
    this.touchNext = (slot + 1) % TOUCH_SLOTS;
    unchecked(this.touchKeys[slot] = key);
    unchecked(this.touchAt[slot] = now);
    this.touches.pushAscii("a ");
    this.touches.pushBytes(id, 0, idLen);
    this.touches.pushByte(32);
    this.touches.pushBytes(hashHex, 0, hashHex.len);
    this.touches.pushByte(10);
    this.pendingCounts++;
  }

  /** Writes a batch when lines or a rare decision are pending, or counts are and flushMs has passed. */
  maybeFlush(now: u64): void {
    if (this.lines.len == 0 && (!this.urgent || this.full)) {
      if (this.pendingCounts == 0 && this.dropped == 0) return;
      if (now >= this.lastFlush && now - this.lastFlush < this.flushMs) return;
    }
    this.flush(now);
  }

  flush(now: u64): void {
    if (this.dirfd < 0) return;
    this.lastFlush = now;
    this.encode(now);
    const session = this.lines.len > 0;
    if (session ? this.writeSlot(now, "events/s-", this.sessionSlots) : this.writeSlot(now, "events/e-", this.slots)) {
      for (let r = 0; r < REASON_COUNT; r++) unchecked(this.counts[r] = 0);
      unchecked(this.bodies[0] = 0);
      unchecked(this.bodies[1] = 0);
      this.exposed = 0;
      this.pendingCounts = 0;
      this.urgent = false;
      this.full = false;
      this.dropped = 0;
      this.lossLogged = false;
      this.touches.clear();
    } else if (session) {
      // Every probed slot is taken (sidecar not consuming): keep the counts, count the lost lines.
      this.lose(this.lineCount);
    } else {
      // Every count slot is taken: keep the counts and retry on the flushMs schedule rather than
      // probing again on every rare decision.
      this.full = true;
    }
    this.lines.clear();
    this.lineCount = 0;
  }

  /** The pending batch as the file's bytes (docs/registry-view.md, events): header, t, l/c/v, a, d, b, w, x, end. */
  encode(now: u64): Bytes {
    const o = this.out;
    o.clear();
    o.pushAscii("MCPAEV 1\nt ");
    o.pushU64(now);
    o.pushByte(10);
    o.pushBytes(this.lines, 0, this.lines.len);
    o.pushBytes(this.touches, 0, this.touches.len);
    pushCounts(o, "d ", REASONS, this.counts);
    pushCounts(o, "b ", BODY_KINDS, this.bodies);
    if (this.exposed > 0) {
      o.pushAscii("w ");
      o.pushU64(this.exposed);
      o.pushByte(10);
    }
    if (this.dropped > 0) {
      o.pushAscii("x ");
      o.pushU64(this.dropped);
      o.pushByte(10);
    }
    o.pushAscii("end\n");
    return o;
  }

  /** Counts lost learn/close lines (reported in the next batch) and says so once per outage. */
  private lose(n: u32): void {
    this.dropped += n;
    if (this.lossLogged) return;
    this.lossLogged = true;
    log(LOG_ERROR, "mcp-affinity: no free slot in events/ for session events (is the sidecar consuming?); learned sessions and closes are lost and counted");
  }

  private writeSlot(now: u64, prefix: string, slots: u32): bool {
    this.seq++;
    const start = <u32>((now * 2654435761 + <u64>this.seq * 40503) % <u64>slots);
    for (let p: u32 = 0; p < PROBES; p++) {
      const slot = (start + p) % slots;
      this.path.clear();
      this.path.pushAscii(prefix);
      this.path.pushU64(slot);
      this.path.pushAscii(".evt");
      let fd = openWrite(this.dirfd, this.path, true);
      if (fd == -<i32>ERRNO_NOENT) {
        mkdir(this.dirfd, "events");
        fd = openWrite(this.dirfd, this.path, true);
      }
      if (fd == -<i32>ERRNO_EXIST) continue;
      if (fd < 0) return false;
      const ok = writeAll(fd, this.out);
      close(fd);
      return ok;
    }
    return false;
  }
}
