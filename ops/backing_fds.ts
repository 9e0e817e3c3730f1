/**
 * Which open file handles are backed by a file descriptor, in memory every
 * serving thread can read.
 *
 * An `open` or `create` that answers with `backingFd` says: READ and WRITE
 * of this handle are `pread`/`pwrite` of that fd. The session then serves
 * them itself, and on the io_uring transport each queue's own thread does
 * so (READ_FIXED / WRITE_FIXED into the request's slot) without waking the
 * thread that runs the FileSystem.
 *
 * The table is indexed by the handle number, as file descriptors are small
 * integers: handles from 0 to {@linkcode BackingFdTable.capacity} - 1 can be
 * entered; any other handle simply is not, and its reads and writes go to
 * the FileSystem's `read` and `write`. Only the thread that dispatches
 * OPEN, CREATE and RELEASE writes it. The kernel sends RELEASE only when no
 * READ or WRITE of the handle is in flight, and the entry is cleared before
 * the FileSystem's `release` runs, so no thread reads an fd after it closes.
 *
 * @module
 */

import { Errno } from "../ffi/errno.ts";
import { Opcode, ReadIn } from "./abi.ts";

/** Handle numbers the table can hold by default (the kernel's default `nr_open`). */
export const DEFAULT_BACKING_FD_CAPACITY = 1 << 20;

/** The memory of a {@linkcode BackingFdTable}, to view it from another thread. */
export interface BackingFdShared {
  /** One Int32 per handle: fd + 1 for a whole file, -(fd + 1) for a window, 0 for none. */
  readonly fds: SharedArrayBuffer;
  /** Two Float64 per handle: a window's start in the fd and its length. */
  readonly windows: SharedArrayBuffer;
}

/** A part of a backing fd that a handle's data is: `length` bytes from `offset`. */
export interface BackingWindow {
  /** Where the handle's byte 0 is in the fd. */
  readonly offset: number;
  /** The handle's size: reads end there, and writes may not cross it (EFBIG). */
  readonly length: number;
}

/** Handle → backing fd (and window), shared between the threads of a session. */
export class BackingFdTable {
  /** The shared memory (untouched pages cost nothing). */
  readonly shared: BackingFdShared;
  readonly #slots: Int32Array;
  readonly #windows: Float64Array;

  /** A new empty table, or a view of another thread's table's `shared` memory. */
  constructor(shared?: BackingFdShared) {
    this.shared = shared ?? {
      fds: new SharedArrayBuffer(DEFAULT_BACKING_FD_CAPACITY * 4),
      windows: new SharedArrayBuffer(DEFAULT_BACKING_FD_CAPACITY * 16),
    };
    this.#slots = new Int32Array(this.shared.fds);
    this.#windows = new Float64Array(this.shared.windows);
  }

  /** Handles `0 .. capacity - 1` can be entered. */
  get capacity(): number {
    return this.#slots.length;
  }

  /**
   * Enter `fh` as backed by `fd` (the whole file, or `window` of it); false
   * when `fh` is out of the table's range.
   */
  set(fh: number, fd: number, window?: BackingWindow): boolean {
    if (!(fh >= 0 && fh < this.#slots.length) || !(fd >= 0)) return false;
    if (window) {
      // Written before the slot, which publishes them (Atomics.store orders them).
      this.#windows[2 * fh] = window.offset;
      this.#windows[2 * fh + 1] = window.length;
    }
    Atomics.store(this.#slots, fh, window ? -(fd + 1) : fd + 1);
    return true;
  }

  /** The fd backing `fh`, or -1. */
  get(fh: number): number {
    if (!(fh >= 0 && fh < this.#slots.length)) return -1;
    return Math.abs(Atomics.load(this.#slots, fh)) - 1;
  }

  /**
   * The fd backing the handle whose 64-bit number sits at `offset` in
   * `view` (a request's `fh`, as the kernel sent it), or -1.
   */
  fdAt(view: DataView, offset: number): number {
    return view.getUint32(offset + 4, true) === 0 ? this.get(view.getUint32(offset, true)) : -1;
  }

  /**
   * Whether a request is a READ or WRITE of a handle this table backs (its
   * `fuse_read_in` or `fuse_write_in` at `argOffset` of `view`): one the
   * session serves from the fd, without the FileSystem.
   */
  backs(opcode: number, view: DataView, argOffset: number): boolean {
    if (opcode !== Opcode.READ && opcode !== Opcode.WRITE) return false;
    return this.fdAt(view, argOffset + ReadIn.fh) >= 0; // fuse_write_in has fh there too
  }

  /** Where byte `offset` of backed handle `fh` is in its fd. */
  start(fh: number, offset: number): number {
    return Atomics.load(this.#slots, fh) < 0 ? this.#windows[2 * fh] + offset : offset;
  }

  /**
   * How many of the `size` bytes a READ (or, with `write`, a WRITE) at
   * `offset` of backed handle `fh` moves: all of them for a whole file; for
   * a window, a read ends at its end (as at the end of a file) and a write
   * that would cross it is refused: -EFBIG.
   */
  extent(fh: number, offset: number, size: number, write: boolean): number {
    if (Atomics.load(this.#slots, fh) >= 0) return size;
    const n = Math.max(0, Math.min(size, this.#windows[2 * fh + 1] - offset));
    return write && n < size ? -Errno.EFBIG : n;
  }

  /** Forget `fh` (on RELEASE, before the FileSystem closes the fd). */
  delete(fh: number): void {
    if (fh >= 0 && fh < this.#slots.length) Atomics.store(this.#slots, fh, 0);
  }
}
