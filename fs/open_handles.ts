/**
 * The file and directory handles a passthrough gave the kernel, in memory
 * every serving thread of the mount can read.
 *
 * A handle names an fd, but the fd number alone must not be trusted: a
 * request carrying a handle that was never issued (or was released) would
 * otherwise read, write or close whatever the process has open under that
 * number, the `/dev/fuse` fd or the runtime's own among them. Every use
 * checks the handle here first and answers EBADF if it is not live.
 *
 * One Int32 per fd: 0 none, -1 a file handle, else the directory handle's
 * generation (so a released directory handle stays dead when its fd number
 * is reused).
 *
 * @module
 */

import { Errno } from "../ffi/errno.ts";
import { FuseError } from "../ops/error.ts";

/** fds the table covers: the kernel's default `nr_open`. */
export const HANDLE_FD_LIMIT = 1 << 20;
/** Directory handles are `generation × DIR_HANDLE_STRIDE + fd`. */
const DIR_HANDLE_STRIDE = 2 ** 21;
const FILE = -1;

/** Live handles of one mount's passthrough, shared between its threads. */
export class OpenHandles {
  /** The shared memory (pass it to another thread's table). */
  readonly buffer: SharedArrayBuffer;
  readonly #slots: Int32Array;

  /** A new empty table, or a view of another thread's `buffer`. */
  constructor(buffer?: SharedArrayBuffer) {
    this.buffer = buffer ?? new SharedArrayBuffer(HANDLE_FD_LIMIT * 4);
    this.#slots = new Int32Array(this.buffer);
  }

  /** Issue `fd` as a file handle (the handle is the fd); EMFILE if out of range. */
  addFile(fd: number): number {
    this.#claim(fd, FILE);
    return fd;
  }

  /** Issue `fd` as a directory handle that is never reused (`unique` grows). */
  addDir(fd: number, unique: number): number {
    const generation = (unique % 0x7fffffff) + 1;
    this.#claim(fd, generation);
    return generation * DIR_HANDLE_STRIDE + fd;
  }

  /** The fd of live file handle `fh`; EBADF otherwise. */
  file(fh: number): number {
    if (!(fh >= 0 && fh < HANDLE_FD_LIMIT) || Atomics.load(this.#slots, fh) !== FILE) {
      throw new FuseError(Errno.EBADF);
    }
    return fh;
  }

  /** The fd of live directory handle `fh`; EBADF otherwise. */
  dir(fh: number): number {
    const [fd, generation] = this.#split(fh);
    if (generation <= 0 || Atomics.load(this.#slots, fd) !== generation) {
      throw new FuseError(Errno.EBADF);
    }
    return fd;
  }

  /** End file handle `fh` and return its fd for closing; EBADF if it was not live. */
  releaseFile(fh: number): number {
    const fd = this.file(fh);
    if (Atomics.compareExchange(this.#slots, fd, FILE, 0) !== FILE) {
      throw new FuseError(Errno.EBADF);
    }
    return fd;
  }

  /** End directory handle `fh` and return its fd for closing; EBADF if it was not live. */
  releaseDir(fh: number): number {
    const fd = this.dir(fh);
    const generation = this.#split(fh)[1];
    if (Atomics.compareExchange(this.#slots, fd, generation, 0) !== generation) {
      throw new FuseError(Errno.EBADF);
    }
    return fd;
  }

  #claim(fd: number, value: number): void {
    if (!(fd >= 0 && fd < HANDLE_FD_LIMIT)) throw new FuseError(Errno.EMFILE);
    Atomics.store(this.#slots, fd, value);
  }

  #split(fh: number): [fd: number, generation: number] {
    if (!Number.isSafeInteger(fh) || fh < 0) return [0, 0];
    const fd = fh % DIR_HANDLE_STRIDE;
    if (fd >= HANDLE_FD_LIMIT) return [0, 0];
    return [fd, Math.floor(fh / DIR_HANDLE_STRIDE)];
  }
}
