// WASI file calls (wasi_snapshot_preview1) for the shared view directory. No sockets: each
// instance gets its own WASI fd table from the host, which is what keeps instances apart.

@external("wasi_snapshot_preview1", "fd_prestat_get")
declare function fd_prestat_get(fd: u32, buf: usize): u16;
@external("wasi_snapshot_preview1", "fd_prestat_dir_name")
declare function fd_prestat_dir_name(fd: u32, path: usize, len: u32): u16;
@external("wasi_snapshot_preview1", "path_open")
declare function path_open(dirfd: u32, dirflags: u32, path: usize, pathLen: u32, oflags: u16,
  rightsBase: u64, rightsInheriting: u64, fdflags: u16, fdOut: usize): u16;
@external("wasi_snapshot_preview1", "path_filestat_get")
declare function path_filestat_get(fd: u32, flags: u32, path: usize, pathLen: u32, buf: usize): u16;
@external("wasi_snapshot_preview1", "fd_read")
declare function fd_read(fd: u32, iovs: usize, iovsLen: u32, nread: usize): u16;
@external("wasi_snapshot_preview1", "fd_pread")
declare function fd_pread(fd: u32, iovs: usize, iovsLen: u32, offset: u64, nread: usize): u16;
@external("wasi_snapshot_preview1", "fd_write")
declare function fd_write(fd: u32, iovs: usize, iovsLen: u32, nwritten: usize): u16;
@external("wasi_snapshot_preview1", "fd_close")
declare function fd_close(fd: u32): u16;
@external("wasi_snapshot_preview1", "path_create_directory")
declare function path_create_directory(fd: u32, path: usize, pathLen: u32): u16;
@external("wasi_snapshot_preview1", "clock_time_get")
declare function clock_time_get(id: u32, precision: u64, time: usize): u16;

import { Bytes } from "./bytes";

export const ERRNO_SUCCESS: u16 = 0;
export const ERRNO_EXIST: u16 = 20;
export const ERRNO_NOENT: u16 = 44;

const O_CREAT: u16 = 1;
const O_EXCL: u16 = 4;
const O_TRUNC: u16 = 8;
// fd_read | fd_seek | fd_tell | fd_filestat_get
const RIGHTS_READ: u64 = (1 << 1) | (1 << 2) | (1 << 5) | (1 << 21);
// fd_write | fd_seek | fd_tell | fd_filestat_get
const RIGHTS_WRITE: u64 = (1 << 6) | (1 << 2) | (1 << 5) | (1 << 21);

// One small static area for out-parameters and iovecs.
const cell = memory.data(32);

/** Wall clock in milliseconds (the only clock that is real inside Traefik's WASI). */
export function nowMs(): u64 {
  if (clock_time_get(0, 1000000, cell) != 0) return 0;
  return load<u64>(cell) / 1000000;
}

/** Finds the preopened directory whose guest path is `dir`; -1 when it is not mounted. */
export function findPreopen(dir: string): i32 {
  let want = dir;
  while (want.length > 1 && want.endsWith("/")) want = want.substring(0, want.length - 1);
  for (let fd: u32 = 3; fd < 64; fd++) {
    if (fd_prestat_get(fd, cell) != 0) break;
    if (load<u8>(cell) != 0) continue; // not a directory
    const n = load<u32>(cell, 4);
    const name = new Uint8Array(n);
    if (fd_prestat_dir_name(fd, name.dataStart, n) != 0) continue;
    let got = String.UTF8.decodeUnsafe(name.dataStart, n);
    while (got.length > 1 && got.endsWith("/")) got = got.substring(0, got.length - 1);
    if (got == want) return <i32>fd;
  }
  return -1;
}

// A WASI filestat: dev, ino, filetype, nlink, size, atim, mtim, ctim (u64 each but filetype).
const stat = memory.data(64);

/**
 * What identifies a version of the file at `path`: its inode, size, modification and change times,
 * into `out` (4 values); false when it cannot be read. A file replaced by a rename is a new inode.
 */
export function fileVersion(dirfd: i32, path: Bytes, out: StaticArray<u64>): bool {
  if (path_filestat_get(<u32>dirfd, 0, path.ptr, <u32>path.len, stat) != 0) return false;
  unchecked((out[0] = load<u64>(stat, 8)));
  unchecked((out[1] = load<u64>(stat, 32)));
  unchecked((out[2] = load<u64>(stat, 48)));
  unchecked((out[3] = load<u64>(stat, 56)));
  return true;
}

/** Opens `path` (relative to the preopened dirfd) for reading; returns fd or -errno. */
export function openRead(dirfd: i32, path: Bytes): i32 {
  const e = path_open(<u32>dirfd, 0, path.ptr, <u32>path.len, 0, RIGHTS_READ, 0, 0, cell);
  return e == 0 ? load<i32>(cell) : -<i32>e;
}

/** Creates `path` for writing; with `exclusive` fails with -EEXIST if it exists. */
export function openWrite(dirfd: i32, path: Bytes, exclusive: bool): i32 {
  const flags: u16 = O_CREAT | (exclusive ? O_EXCL : O_TRUNC);
  const e = path_open(<u32>dirfd, 0, path.ptr, <u32>path.len, flags, RIGHTS_WRITE, 0, 0, cell);
  return e == 0 ? load<i32>(cell) : -<i32>e;
}

export function mkdir(dirfd: i32, path: string): void {
  const b = String.UTF8.encode(path);
  path_create_directory(<u32>dirfd, changetype<usize>(b), <u32>b.byteLength);
}

/**
 * Appends what one read gives to `out`, into the room it has (it never grows: an instance that
 * grew a buffer would keep a second page for the rest of its life); bytes read, or -1.
 */
export function readInto(fd: i32, out: Bytes): i32 {
  store<usize>(cell, out.ptr + <usize>out.len);
  store<u32>(cell, <u32>(out.buf.length - out.len), sizeof<usize>());
  if (fd_read(<u32>fd, cell, 1, cell + 16) != 0) return -1;
  const n = <i32>load<u32>(cell + 16);
  out.len += n;
  return n;
}

/**
 * Reads up to `max` bytes (at most what `out` holds) from `offset` of the file into `out`, which it
 * replaces; bytes read (fewer at the end of the file), or -1.
 */
export function readAt(fd: i32, out: Bytes, offset: u64, max: i32): i32 {
  out.clear();
  const want = min<i32>(max, out.buf.length);
  while (out.len < want) {
    store<usize>(cell, out.ptr + <usize>out.len);
    store<u32>(cell, <u32>(want - out.len), sizeof<usize>());
    if (fd_pread(<u32>fd, cell, 1, offset + <u64>out.len, cell + 16) != 0) return -1;
    const n = <i32>load<u32>(cell + 16);
    if (n == 0) break;
    out.len += n;
  }
  return out.len;
}

/** Writes all of `data`; false on any error or short write that makes no progress. */
export function writeAll(fd: i32, data: Bytes): bool {
  let off = 0;
  while (off < data.len) {
    store<usize>(cell, data.ptr + <usize>off);
    store<u32>(cell, <u32>(data.len - off), sizeof<usize>());
    if (fd_write(<u32>fd, cell, 1, cell + 16) != 0) return false;
    const n = <i32>load<u32>(cell + 16);
    if (n <= 0) return false;
    off += n;
  }
  return true;
}

export function close(fd: i32): void {
  fd_close(<u32>fd);
}
