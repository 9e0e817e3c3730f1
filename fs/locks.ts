/**
 * Locks on a backing fd for the passthrough: POSIX locks as open file
 * description (OFD) locks, and flock(2). A lock that is held elsewhere is
 * never waited for in the kernel: the serving thread tries again (backing
 * off) until it is free or the request is interrupted.
 *
 * @module
 */

import { Errno, SystemError } from "../ffi/errno.ts";
import { check, errno, libc } from "../ffi/libc.ts";
import type { FileLock, RequestContext } from "../ops/filesystem.ts";
import { LOCK_TO_EOF, LockType } from "../ops/filesystem.ts";

const F_OFD_GETLK = 36;
const F_OFD_SETLK = 37;
const LOCK_SH = 1, LOCK_EX = 2, LOCK_NB = 4, LOCK_UN = 8;

/** A `struct flock` (x86-64 layout) for `type` over bytes `start..end` (inclusive). */
function flockStruct(type: number, start: number, end: number): Uint8Array<ArrayBuffer> {
  const f = new Uint8Array(32);
  const v = new DataView(f.buffer);
  v.setInt16(0, type, true); // l_whence 0: SEEK_SET; l_pid 0, as OFD locks require
  v.setBigInt64(8, BigInt(start), true);
  v.setBigInt64(16, end >= LOCK_TO_EOF ? 0n : BigInt(end - start + 1), true);
  return f;
}

/**
 * Try `attempt` (a non-blocking lock call) until it succeeds; when the lock
 * is held elsewhere, fail with EAGAIN, or with `wait` try again (backing off
 * to every 50 ms) until the request is interrupted (EINTR). The serving
 * thread never blocks in the kernel for a lock.
 */
async function untilFree(
  ctx: RequestContext,
  wait: boolean,
  attempt: () => number,
  call: string,
): Promise<void> {
  for (let delay = 1;; delay = Math.min(delay * 2, 50)) {
    if (attempt() === 0) return;
    const e = errno();
    if (e !== Errno.EAGAIN && e !== Errno.EACCES) throw new SystemError(call, e);
    if (!wait) throw new SystemError(call, Errno.EAGAIN);
    const signal = ctx.signal;
    signal.throwIfAborted();
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, delay);
      signal.addEventListener("abort", done);
    });
    signal.throwIfAborted();
  }
}

/** The lock that would conflict with `lock` on `fd` (F_OFD_GETLK), or `lock` as F_UNLCK. */
export function testLock(fd: number, lock: FileLock): FileLock {
  const f = flockStruct(lock.type, lock.start, lock.end);
  check(libc.fcntl(fd, F_OFD_GETLK, f), "fcntl F_OFD_GETLK");
  const v = new DataView(f.buffer);
  const type = v.getInt16(0, true);
  if (type === LockType.F_UNLCK) return { ...lock, type };
  const start = Number(v.getBigInt64(8, true));
  const len = Number(v.getBigInt64(16, true));
  // A process's lock names its pid; an OFD lock has none (l_pid -1).
  const pid = Math.max(v.getInt32(24, true), 0);
  return { type, start, end: len === 0 ? LOCK_TO_EOF : start + len - 1, pid };
}

/** Take or release `lock` on `fd` (F_OFD_SETLK); with `wait`, until it is free. */
export function setLock(
  ctx: RequestContext,
  fd: number,
  lock: FileLock,
  wait: boolean,
): Promise<void> {
  const f = flockStruct(lock.type, lock.start, lock.end);
  return untilFree(ctx, wait, () => libc.fcntl(fd, F_OFD_SETLK, f), "fcntl F_OFD_SETLK");
}

/** flock(2) on `fd` for a lock of `type` (F_RDLCK, F_WRLCK, F_UNLCK). */
export function flockFd(
  ctx: RequestContext,
  fd: number,
  type: number,
  wait: boolean,
): Promise<void> {
  const op = type === LockType.F_UNLCK ? LOCK_UN : type === LockType.F_RDLCK ? LOCK_SH : LOCK_EX;
  return untilFree(ctx, wait, () => libc.flock(fd, op | LOCK_NB), "flock");
}
