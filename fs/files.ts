/**
 * A file system's own files, outside any request: the archive it serves
 * from, an image file, a directory of data. Deno's file API would need
 * `--allow-read` and `--allow-write`; these are libc calls through FFI, so a
 * server still needs `--allow-ffi` alone. They are synchronous and throw a
 * `SystemError` carrying the errno.
 *
 * ```ts
 * const fd = openFile("/srv/data.tar");
 * const header = preadFile(fd, 512, 0);
 * const { size } = fstatFile(fd);
 * ```
 *
 * An fd from {@linkcode openFile} is what `open` may answer as `backingFd`
 * (with `backingOffset` and `backingLength` for a part of it), so that the
 * session moves the file's data without calling `read`.
 *
 * @module
 */

import { AT, check, cstr, libc, O, readLink } from "../ffi/libc.ts";
import type { Attr } from "../ops/filesystem.ts";

export { O };
export { readLink };

const STATX_BASIC_STATS = 0x7ff;
const EMPTY = cstr("");

/** A `struct statx` as FUSE attributes. */
export function attrFromStatx(v: DataView): Attr {
  const rdevMajor = v.getUint32(128, true);
  const rdevMinor = v.getUint32(132, true);
  return {
    ino: Number(v.getBigUint64(32, true)),
    mode: v.getUint16(28, true),
    nlink: v.getUint32(16, true),
    uid: v.getUint32(20, true),
    gid: v.getUint32(24, true),
    // The kernel's 32-bit device encoding (new_encode_dev).
    rdev: (rdevMinor & 0xff) | (rdevMajor << 8) | ((rdevMinor & ~0xff) << 12),
    size: Number(v.getBigUint64(40, true)),
    blocks: Number(v.getBigUint64(48, true)),
    blksize: v.getUint32(4, true),
    atimeSec: Number(v.getBigInt64(64, true)),
    atimeNsec: v.getUint32(72, true),
    mtimeSec: Number(v.getBigInt64(112, true)),
    mtimeNsec: v.getUint32(120, true),
    ctimeSec: Number(v.getBigInt64(96, true)),
    ctimeNsec: v.getUint32(104, true),
  };
}

/**
 * Open `path` with open(2) `flags` ({@linkcode O}; default `O.RDONLY`) and,
 * when creating, `mode` (default 0o644); the fd, closed on exec.
 */
export function openFile(path: string, flags?: number, mode?: number): number {
  return check(libc.open(cstr(path), (flags ?? O.RDONLY) | O.CLOEXEC, mode ?? 0o644), "open", path);
}

/** Close `fd`. */
export function closeFile(fd: number): void {
  check(libc.close(fd), "close", `fd ${fd}`);
}

/** struct statx, one per thread: each call decodes it before returning. */
const statxScratch = new Uint8Array(256);
const statxView = new DataView(statxScratch.buffer);

function statx(dirfd: number, path: Uint8Array<ArrayBuffer>, flags: number, what: string): Attr {
  check(libc.statx(dirfd, path, flags, STATX_BASIC_STATS, statxScratch), "statx", what);
  return attrFromStatx(statxView);
}

/** The attributes of `path` (a symlink's own, as lstat(2)), as FUSE answers them. */
export function statFile(path: string): Attr {
  return statx(AT.FDCWD, cstr(path), AT.SYMLINK_NOFOLLOW, path);
}

/** The attributes of the file open at `fd` (fstat(2)), as FUSE answers them. */
export function fstatFile(fd: number): Attr {
  return statx(fd, EMPTY, AT.EMPTY_PATH, `fd ${fd}`);
}

/**
 * Read up to `length` bytes of `fd` at `offset` (pread(2)): fewer at the
 * end of the file, none past it.
 */
export function preadFile(fd: number, length: number, offset: number): Uint8Array {
  const buf = new Uint8Array(length);
  const n = length === 0 ? 0 : check(
    libc.pread64(fd, Deno.UnsafePointer.of(buf), BigInt(length), BigInt(offset)),
    "pread",
    `fd ${fd}`,
  );
  return buf.subarray(0, n);
}

/** Write `data` to `fd` at `offset` (pwrite(2)); the bytes written. */
export function pwriteFile(fd: number, data: Uint8Array, offset: number): number {
  if (data.length === 0) return 0;
  return check(
    libc.pwrite64(fd, Deno.UnsafePointer.of(data), BigInt(data.length), BigInt(offset)),
    "pwrite",
    `fd ${fd}`,
  );
}
