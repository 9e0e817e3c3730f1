/**
 * {@linkcode BackingIo} as plain synchronous libc calls: the fallback where
 * io_uring is not available. Each call runs on the serving thread.
 *
 * @module
 */

import { check, libc, off } from "../../ffi/libc.ts";
import { asCaller } from "../../ffi/credentials.ts";
import type { BackingIo, Caller } from "../../ops/backing_io.ts";

/** Synchronous backing calls behind the asynchronous interface. */
export class DirectIo implements BackingIo {
  /** Always "direct". */
  readonly kind = "direct" as const;

  statx(dirfd: number, path: Uint8Array, flags: number, mask: number, buf: Uint8Array) {
    return settle(() =>
      check(libc.statx(dirfd, path as BufferSource, flags, mask, buf as BufferSource), "statx")
    );
  }

  openat(dirfd: number, path: Uint8Array, flags: number, mode: number, caller?: Caller) {
    return result(() =>
      asCaller(caller, () => check(libc.openat(dirfd, path as BufferSource, flags, mode), "openat"))
    );
  }

  close(fd: number): Promise<void> {
    return settle(() => check(libc.close(fd), "close"));
  }

  mkdirat(dirfd: number, path: Uint8Array, mode: number, caller?: Caller): Promise<void> {
    return settle(() =>
      asCaller(caller, () => check(libc.mkdirat(dirfd, path as BufferSource, mode), "mkdirat"))
    );
  }

  symlinkat(target: Uint8Array, dirfd: number, path: Uint8Array, caller?: Caller): Promise<void> {
    return settle(() =>
      asCaller(
        caller,
        () =>
          check(libc.symlinkat(target as BufferSource, dirfd, path as BufferSource), "symlinkat"),
      )
    );
  }

  unlinkat(dirfd: number, path: Uint8Array, flags: number): Promise<void> {
    return settle(() => check(libc.unlinkat(dirfd, path as BufferSource, flags), "unlinkat"));
  }

  renameat(od: number, op: Uint8Array, nd: number, np: Uint8Array, flags: number): Promise<void> {
    return settle(() =>
      check(libc.renameat2(od, op as BufferSource, nd, np as BufferSource, flags), "renameat2")
    );
  }

  linkat(od: number, op: Uint8Array, nd: number, np: Uint8Array, flags: number): Promise<void> {
    return settle(() =>
      check(libc.linkat(od, op as BufferSource, nd, np as BufferSource, flags), "linkat")
    );
  }

  fsync(fd: number, datasync: boolean): Promise<void> {
    return settle(() =>
      check(datasync ? libc.fdatasync(fd) : libc.fsync(fd), datasync ? "fdatasync" : "fsync")
    );
  }

  fallocate(fd: number, mode: number, offset: number, length: number): Promise<void> {
    return settle(() => check(libc.fallocate(fd, mode | 0, off(offset), off(length)), "fallocate"));
  }

  ftruncate(fd: number, length: number): Promise<void> {
    return settle(() => check(libc.ftruncate(fd, off(length)), "ftruncate"));
  }

  pread(fd: number, buf: Uint8Array, offset: number): Promise<number> {
    return result(() =>
      check(
        libc.pread64(
          fd,
          Deno.UnsafePointer.of(buf as BufferSource),
          BigInt(buf.length),
          off(offset),
        ),
        "pread",
      )
    );
  }

  pwrite(fd: number, buf: Uint8Array, offset: number): Promise<number> {
    return result(() =>
      check(
        libc.pwrite64(
          fd,
          Deno.UnsafePointer.of(buf as BufferSource),
          BigInt(buf.length),
          off(offset),
        ),
        "pwrite",
      )
    );
  }
}

/** `fn`'s completion as a promise, or its SystemError as a rejection. */
function settle(fn: () => unknown): Promise<void> {
  try {
    fn();
    return Promise.resolve();
  } catch (e) {
    return Promise.reject(e);
  }
}

/** `fn`'s result as a promise, or its SystemError as a rejection. */
function result(fn: () => number): Promise<number> {
  try {
    return Promise.resolve(fn());
  } catch (e) {
    return Promise.reject(e);
  }
}
