// The byte buffer every module of the plugin reads and writes through (no ABI, no WASI).

/** A growable byte buffer reused across requests: instance memory stays flat. */
export class Bytes {
  buf: Uint8Array;
  len: i32 = 0;
  constructor(capacity: i32) {
    this.buf = new Uint8Array(capacity);
  }
  get ptr(): usize {
    return this.buf.dataStart;
  }
  ensure(capacity: i32): void {
    if (capacity <= this.buf.length) return;
    let c = this.buf.length;
    while (c < capacity) c <<= 1;
    const n = new Uint8Array(c);
    memory.copy(n.dataStart, this.buf.dataStart, <usize>this.len);
    this.buf = n;
  }
  clear(): void {
    this.len = 0;
  }
  @inline at(i: i32): u8 {
    return load<u8>(this.buf.dataStart + <usize>i);
  }
  pushByte(b: u8): void {
    this.ensure(this.len + 1);
    store<u8>(this.buf.dataStart + <usize>this.len, b);
    this.len++;
  }
  pushRange(src: usize, n: i32): void {
    this.ensure(this.len + n);
    memory.copy(this.buf.dataStart + <usize>this.len, src, <usize>n);
    this.len += n;
  }
  pushBytes(other: Bytes, start: i32, end: i32): void {
    this.pushRange(other.ptr + <usize>start, end - start);
  }
  /** Appends an ASCII string (all strings this plugin writes are ASCII). */
  pushAscii(s: string): void {
    const n = s.length;
    this.ensure(this.len + n);
    const base = this.buf.dataStart + <usize>this.len;
    for (let i = 0; i < n; i++) store<u8>(base + <usize>i, <u8>s.charCodeAt(i));
    this.len += n;
  }
  pushU64(v: u64): void {
    if (v >= 10) this.pushU64(v / 10);
    this.pushByte(<u8>(48 + <i32>(v % 10)));
  }
  /** Copy of bytes [start, end) as a Latin-1 string (byte-exact for ASCII). */
  toAscii(start: i32, end: i32): string {
    let s = "";
    if (end <= start) return s;
    // String.fromCharCodes would need an array; build via UTF16 buffer.
    const out = new ArrayBuffer((end - start) << 1);
    const o = changetype<usize>(out);
    for (let i = start; i < end; i++) store<u16>(o + (<usize>(i - start) << 1), <u16>this.at(i));
    return String.UTF16.decode(out);
  }
}

/** True when bytes [start, end) of b are the ASCII string s. */
export function equalsAscii(b: Bytes, start: i32, end: i32, s: string): bool {
  if (end - start != s.length) return false;
  for (let i = 0; i < s.length; i++) if (<i32>b.at(start + i) != s.charCodeAt(i)) return false;
  return true;
}
