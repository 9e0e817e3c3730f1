/**
 * {@linkcode BackingIo} over an io_uring: every call is an SQE, and the
 * caller's promise settles when its CQE is reaped. A call that blocks (a
 * cold lookup, an fsync) waits in the kernel's io-wq, not on the serving
 * thread.
 *
 * Two ways to drive it: the io_uring transport shares its ring (its serving
 * loop submits and reaps, so a request, its backing calls and its commit
 * travel through one ring), and the classic transport uses
 * {@linkcode RingIo.own}, a ring of its own reaped by a small loop.
 *
 * Creating calls run with the caller's credentials through registered
 * personalities: one per (uid, gid), registered on first use while this
 * thread's fsuid/fsgid are switched to them.
 *
 * @module
 */

import { Ring } from "../../ffi/ring.ts";
import {
  prepClose,
  prepFallocate,
  prepFsync,
  prepFtruncate,
  prepLinkat,
  prepMkdirat,
  prepOpenat,
  prepRead,
  prepRenameat,
  prepStatx,
  prepSymlinkat,
  prepUnlinkat,
  prepWrite,
} from "../../ffi/sqe.ts";
import { Sqe } from "../../ffi/uring_abi.ts";
import type { BackingIo, Caller } from "../../ops/backing_io.ts";
import { asCaller, asRoot } from "../../ffi/credentials.ts";
import { addressOf as address, preadPinned, pwritePinned } from "../../ffi/libc.ts";
import { Errno } from "../../ffi/errno.ts";

/** Backing calls as io_uring operations. */
export class RingIo implements BackingIo {
  /** Always "ring". */
  readonly kind = "ring" as const;
  #ring: Ring;
  #kick: () => void;
  #personalities = new Map<string, number>();
  #owned: { closed: boolean; reaping: boolean } | null = null;

  /**
   * Use `ring`, whose owner submits and reaps; `kick()` is called after
   * each SQE is prepared and must see it submitted soon (at the latest
   * once the current synchronous work is done).
   */
  constructor(ring: Ring, kick: () => void) {
    this.#ring = ring;
    this.#kick = kick;
  }

  /**
   * A RingIo with a ring of its own (`entries` SQEs). Prepared SQEs are
   * submitted at the end of the current task; what the kernel completes
   * inline is reaped at once, the rest by a loop that waits on Deno's
   * blocking pool only while calls are in flight. Throws when io_uring
   * cannot be set up.
   */
  static own(entries = 64): RingIo {
    const ring = new Ring({ entries });
    const state = { closed: false, reaping: false, queued: false };
    const reapLoop = async () => {
      state.reaping = true;
      try {
        while (ring.inFlight > 0 && !state.closed) {
          await ring.wait();
          ring.reap();
        }
      } finally {
        state.reaping = false;
      }
    };
    const io = new RingIo(ring, () => {
      if (state.queued) return;
      state.queued = true;
      queueMicrotask(() => {
        state.queued = false;
        if (state.closed) return;
        try {
          ring.submit();
          ring.reap();
        } catch (e) {
          // Nobody could catch this: fail what waits on the ring instead.
          console.error("denofuse: backing ring failed:", (e as Error).message);
          ring.failAll(Errno.EIO);
          return;
        }
        if (ring.inFlight > 0 && !state.reaping) {
          reapLoop().catch((e) => {
            console.error("denofuse: backing ring failed:", (e as Error).message);
            ring.failAll(Errno.EIO);
          });
        }
      });
    });
    io.#owned = state;
    return io;
  }

  /** Tear down a ring from {@linkcode own} (a shared ring belongs to its owner). */
  async shutdown(): Promise<void> {
    if (!this.#owned || this.#owned.closed) return;
    this.#owned.closed = true;
    await this.#ring.close();
  }

  /** Prepare one SQE, set its personality for `caller`, and await its CQE. */
  #op(
    call: string,
    prep: (s: DataView, at: number) => void,
    keep: unknown,
    caller?: Caller,
  ): Promise<number> {
    const personality = caller && asRoot() ? this.#personality(caller) : 0;
    const ring = this.#ring;
    const p = ring.submitOp(call, (at) => {
      prep(ring.sqes, at);
      if (personality) ring.sqes.setUint16(at + Sqe.personality, personality, true);
    }, keep);
    this.#kick();
    return p;
  }

  #personality(caller: Caller): number {
    const key = `${caller.uid}:${caller.gid}`;
    let id = this.#personalities.get(key);
    if (id === undefined) {
      id = asCaller(caller, () => this.#ring.registerPersonality());
      this.#personalities.set(key, id);
    }
    return id;
  }

  statx(
    dirfd: number,
    path: Uint8Array,
    flags: number,
    mask: number,
    buf: Uint8Array,
  ): Promise<void> {
    return settled(this.#op(
      "statx",
      (s, at) => prepStatx(s, at, dirfd, address(path), flags, mask, address(buf)),
      [path, buf],
    ));
  }

  openat(
    dirfd: number,
    path: Uint8Array,
    flags: number,
    mode: number,
    caller?: Caller,
  ): Promise<number> {
    return this.#op(
      "openat",
      (s, at) => prepOpenat(s, at, dirfd, address(path), flags, mode),
      path,
      caller,
    );
  }

  close(fd: number): Promise<void> {
    return settled(this.#op("close", (s, at) => prepClose(s, at, fd), null));
  }

  mkdirat(dirfd: number, path: Uint8Array, mode: number, caller?: Caller): Promise<void> {
    return settled(this.#op(
      "mkdirat",
      (s, at) => prepMkdirat(s, at, dirfd, address(path), mode),
      path,
      caller,
    ));
  }

  symlinkat(target: Uint8Array, dirfd: number, path: Uint8Array, caller?: Caller): Promise<void> {
    return settled(this.#op(
      "symlinkat",
      (s, at) => prepSymlinkat(s, at, address(target), dirfd, address(path)),
      [target, path],
      caller,
    ));
  }

  unlinkat(dirfd: number, path: Uint8Array, flags: number): Promise<void> {
    return settled(this.#op(
      "unlinkat",
      (s, at) => prepUnlinkat(s, at, dirfd, address(path), flags),
      path,
    ));
  }

  renameat(od: number, op: Uint8Array, nd: number, np: Uint8Array, flags: number): Promise<void> {
    return settled(this.#op(
      "renameat2",
      (s, at) => prepRenameat(s, at, od, address(op), nd, address(np), flags),
      [op, np],
    ));
  }

  linkat(od: number, op: Uint8Array, nd: number, np: Uint8Array, flags: number): Promise<void> {
    return settled(this.#op(
      "linkat",
      (s, at) => prepLinkat(s, at, od, address(op), nd, address(np), flags),
      [op, np],
    ));
  }

  fsync(fd: number, datasync: boolean): Promise<void> {
    return settled(this.#op(
      datasync ? "fdatasync" : "fsync",
      (s, at) => prepFsync(s, at, fd, datasync),
      null,
    ));
  }

  fallocate(fd: number, mode: number, offset: number, length: number): Promise<void> {
    return settled(this.#op(
      "fallocate",
      (s, at) => prepFallocate(s, at, fd, mode, offset, length),
      null,
    ));
  }

  ftruncate(fd: number, length: number): Promise<void> {
    return settled(this.#op("ftruncate", (s, at) => prepFtruncate(s, at, fd, length), null));
  }

  pread(fd: number, buf: Uint8Array, offset: number): Promise<number> {
    return this.#op(
      "pread",
      (s, at) => prepRead(s, at, fd, address(buf), buf.length, offset),
      buf,
    );
  }

  pwrite(fd: number, buf: Uint8Array, offset: number): Promise<number> {
    return this.#op(
      "pwrite",
      (s, at) => prepWrite(s, at, fd, address(buf), buf.length, offset),
      buf,
    );
  }

  /** `pread` into pinned memory at `addr` (for transports; no buffer to keep). */
  readInto(fd: number, addr: bigint, length: number, offset: number): Promise<number> {
    return this.#op("pread", (s, at) => prepRead(s, at, fd, addr, length, offset), null);
  }

  /** `pwrite` from pinned memory at `addr` (for transports). */
  writeFrom(fd: number, addr: bigint, length: number, offset: number): Promise<number> {
    return this.#op("pwrite", (s, at) => prepWrite(s, at, fd, addr, length, offset), null);
  }
}

/**
 * `pread` into pinned memory at `address` (a transport's reply slot):
 * through `ring` when there is one, so a slow read never stalls the
 * thread, else directly. Resolves (or returns) the bytes read; fails with
 * a SystemError.
 */
export function pinnedRead(
  ring: RingIo | null,
  fd: number,
  address: bigint,
  length: number,
  offset: number,
): number | Promise<number> {
  if (ring) return ring.readInto(fd, address, length, offset);
  return preadPinned(fd, Deno.UnsafePointer.create(address), length, offset);
}

/** `pwrite` from pinned memory at `address`; as {@linkcode pinnedRead}. */
export function pinnedWrite(
  ring: RingIo | null,
  fd: number,
  address: bigint,
  length: number,
  offset: number,
): number | Promise<number> {
  if (ring) return ring.writeFrom(fd, address, length, offset);
  return pwritePinned(fd, Deno.UnsafePointer.create(address), length, offset);
}

/** A call's completion, its result dropped (it is 0 for these calls). */
function settled(p: Promise<number>): Promise<void> {
  return p as Promise<unknown> as Promise<void>;
}
