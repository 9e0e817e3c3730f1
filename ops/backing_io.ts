/**
 * Backing I/O: the system calls a file system makes on the objects it serves
 * (a passthrough's source directory), offered by the transport with each
 * request as `ctx.io`.
 *
 * On the io_uring transport they go through the same ring that carries the
 * FUSE requests, so a slow call (a cold directory on a disk, an fsync) waits
 * in the kernel and never holds up the requests behind it. On the classic
 * transport they go through a ring of its own when io_uring is available,
 * and are plain synchronous calls otherwise ({@linkcode BackingIo.kind} says
 * which). Calls that io_uring has no operation for (readlink, getdents,
 * fchmod, ...) are the file system's own business.
 *
 * Paths are NUL-terminated byte strings (`cstr()`); the memory of a path
 * and of a statx buffer must stay untouched until the call settles.
 *
 * @module
 */

/** The credentials a creating call acts with: what it creates is theirs. */
export interface Caller {
  /** File system uid for the call. */
  readonly uid: number;
  /** File system gid for the call. */
  readonly gid: number;
}

/**
 * Asynchronous `*at()` calls, `fsync`, `fallocate`, `ftruncate` and `close`.
 * Every method rejects with a `SystemError` carrying the errno.
 */
export interface BackingIo {
  /** "ring": io_uring operations; "direct": synchronous libc calls. */
  readonly kind: "ring" | "direct";
  /** `statx(dirfd, path, flags, mask, buf)`; `buf` holds 256 bytes. */
  statx(
    dirfd: number,
    path: Uint8Array,
    flags: number,
    mask: number,
    buf: Uint8Array,
  ): Promise<void>;
  /** `openat(dirfd, path, flags, mode)`, as `caller` when given (and when running as root). */
  openat(
    dirfd: number,
    path: Uint8Array,
    flags: number,
    mode: number,
    caller?: Caller,
  ): Promise<number>;
  /** `close(fd)`. */
  close(fd: number): Promise<void>;
  /** `mkdirat(dirfd, path, mode)`, as `caller` when given. */
  mkdirat(dirfd: number, path: Uint8Array, mode: number, caller?: Caller): Promise<void>;
  /** `symlinkat(target, dirfd, path)`, as `caller` when given. */
  symlinkat(target: Uint8Array, dirfd: number, path: Uint8Array, caller?: Caller): Promise<void>;
  /** `unlinkat(dirfd, path, flags)`. */
  unlinkat(dirfd: number, path: Uint8Array, flags: number): Promise<void>;
  /** `renameat2(olddirfd, oldpath, newdirfd, newpath, flags)`. */
  renameat(
    oldDirfd: number,
    oldPath: Uint8Array,
    newDirfd: number,
    newPath: Uint8Array,
    flags: number,
  ): Promise<void>;
  /** `linkat(olddirfd, oldpath, newdirfd, newpath, flags)`. */
  linkat(
    oldDirfd: number,
    oldPath: Uint8Array,
    newDirfd: number,
    newPath: Uint8Array,
    flags: number,
  ): Promise<void>;
  /** `fsync(fd)`, or `fdatasync(fd)` with `datasync`. */
  fsync(fd: number, datasync: boolean): Promise<void>;
  /** `fallocate(fd, mode, offset, length)`. */
  fallocate(fd: number, mode: number, offset: number, length: number): Promise<void>;
  /** `ftruncate(fd, length)`. */
  ftruncate(fd: number, length: number): Promise<void>;
  /** `pread(fd, buf, offset)`: resolves with the bytes read. */
  pread(fd: number, buf: Uint8Array, offset: number): Promise<number>;
  /** `pwrite(fd, buf, offset)`: resolves with the bytes written. */
  pwrite(fd: number, buf: Uint8Array, offset: number): Promise<number>;
}
