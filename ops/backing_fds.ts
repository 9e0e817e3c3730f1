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

/** Handle numbers the table can hold by default (the kernel's default `nr_open`). */
export const DEFAULT_BACKING_FD_CAPACITY = 1 << 20;

/** Handle → backing fd, shared between the threads of a session. */
export class BackingFdTable {
  /** The shared memory: one Int32 per handle, holding fd + 1 (0: none). */
  readonly buffer: SharedArrayBuffer;
  readonly #slots: Int32Array;

  /** A new empty table, or a view of `buffer` from another thread's table. */
  constructor(buffer?: SharedArrayBuffer) {
    this.buffer = buffer ?? new SharedArrayBuffer(DEFAULT_BACKING_FD_CAPACITY * 4);
    this.#slots = new Int32Array(this.buffer);
  }

  /** Handles `0 .. capacity - 1` can be entered. */
  get capacity(): number {
    return this.#slots.length;
  }

  /** Enter `fh` as backed by `fd`; false when `fh` is out of the table's range. */
  set(fh: number, fd: number): boolean {
    if (!(fh >= 0 && fh < this.#slots.length) || !(fd >= 0)) return false;
    Atomics.store(this.#slots, fh, fd + 1);
    return true;
  }

  /** The fd backing `fh`, or -1. */
  get(fh: number): number {
    if (!(fh >= 0 && fh < this.#slots.length)) return -1;
    return Atomics.load(this.#slots, fh) - 1;
  }

  /**
   * The fd backing the handle whose 64-bit number sits at `offset` in
   * `view` (a request's `fh`, as the kernel sent it), or -1.
   */
  fdAt(view: DataView, offset: number): number {
    return view.getUint32(offset + 4, true) === 0 ? this.get(view.getUint32(offset, true)) : -1;
  }

  /** Forget `fh` (on RELEASE, before the FileSystem closes the fd). */
  delete(fh: number): void {
    if (fh >= 0 && fh < this.#slots.length) Atomics.store(this.#slots, fh, 0);
  }
}
