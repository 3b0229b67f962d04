// Events for the sidecar (docs/registry-view.md): learned sessions, closes, decision counts.
// Each batch is one file created O_EXCL in a bounded ring of slots, written with one write.
import { Bytes } from "./abi";
import { openWrite, writeAll, close, mkdir, ERRNO_EXIST, ERRNO_NOENT } from "./wasi";
import { REASONS, REASON_COUNT } from "./core";

const PROBES: u32 = 16;

// How a POST body went to the node: copied into memory first, or streamed as it came (chunked, or
// larger than maxBufferedBodyBytes). Index into BODY_KINDS; `b` lines of a batch.
export const BODY_BUFFERED: i32 = 0;
export const BODY_STREAMED: i32 = 1;
const BODY_KINDS: StaticArray<string> = ["buffered", "streamed"];
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

export class EventLog {
  counts: StaticArray<u32> = new StaticArray<u32>(REASON_COUNT);
  /** POSTs with a body, by how the body went on: [buffered, streamed]. */
  bodies: StaticArray<u32> = new StaticArray<u32>(2);
  pendingCounts: u32 = 0;
  dropped: u32 = 0;
  lastFlush: u64 = 0;
  seq: u32 = 0;
  /** Pending `l`/`c` lines (session ids in clear: only ever written into events/). */
  lines: Bytes = new Bytes(512);
  private out: Bytes = new Bytes(1024);
  private path: Bytes = new Bytes(64);

  constructor(public dirfd: i32, public flushMs: u64, public slots: u32) {}

  count(reason: i32): void {
    unchecked(this.counts[reason] += 1);
    this.pendingCounts++;
  }

  countBody(kind: i32): void {
    unchecked(this.bodies[kind] += 1);
    this.pendingCounts++;
  }

  /** Queues an `l` or `c` line; a line that would overflow the batch is dropped and counted. */
  addLine(kind: string, id: Bytes, idStart: i32, idEnd: i32, hashHex: Bytes, cookie: string): void {
    const need = 4 + (idEnd - idStart) + hashHex.len + cookie.length;
    if (this.lines.len + need > MAX_PENDING_BYTES) {
      this.dropped++;
      return;
    }
    this.lines.pushAscii(kind);
    this.lines.pushByte(32);
    this.lines.pushBytes(id, idStart, idEnd);
    this.lines.pushByte(32);
    this.lines.pushBytes(hashHex, 0, hashHex.len);
    this.lines.pushByte(32);
    this.lines.pushAscii(cookie.length > 0 ? cookie : "-");
    this.lines.pushByte(10);
  }

  /** Writes a batch when lines are pending, or counts are and flushMs has passed. */
  maybeFlush(now: u64): void {
    if (this.lines.len == 0) {
      if (this.pendingCounts == 0 && this.dropped == 0) return;
      if (now >= this.lastFlush && now - this.lastFlush < this.flushMs) return;
    }
    this.flush(now);
  }

  flush(now: u64): void {
    if (this.dirfd < 0) return;
    this.lastFlush = now;
    const o = this.out;
    o.clear();
    o.pushAscii("MCPAEV 1\nt ");
    o.pushU64(now);
    o.pushByte(10);
    o.pushBytes(this.lines, 0, this.lines.len);
    pushCounts(o, "d ", REASONS, this.counts);
    pushCounts(o, "b ", BODY_KINDS, this.bodies);
    if (this.dropped > 0) {
      o.pushAscii("x ");
      o.pushU64(this.dropped);
      o.pushByte(10);
    }
    o.pushAscii("end\n");
    if (this.writeSlot(now)) {
      for (let r = 0; r < REASON_COUNT; r++) unchecked(this.counts[r] = 0);
      unchecked(this.bodies[0] = 0);
      unchecked(this.bodies[1] = 0);
      this.pendingCounts = 0;
      this.dropped = 0;
      this.lines.clear();
    } else {
      // Every probed slot is taken (sidecar not consuming): keep the counts, drop the lines.
      if (this.lines.len > 0) this.dropped++;
      this.lines.clear();
    }
  }

  private writeSlot(now: u64): bool {
    this.seq++;
    const start = <u32>((now * 2654435761 + <u64>this.seq * 40503) % <u64>this.slots);
    for (let p: u32 = 0; p < PROBES; p++) {
      const slot = (start + p) % this.slots;
      this.path.clear();
      this.path.pushAscii("events/e-");
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
