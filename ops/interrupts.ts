/**
 * INTERRUPT: which requests the kernel asked to cancel, in memory every
 * serving thread can read.
 *
 * The kernel sends INTERRUPT over /dev/fuse (to the session's thread) while
 * the request it names may be running in any thread: a queue thread's own
 * FileSystem, a /dev/fuse thread. The session's dispatcher posts the unique
 * here; each dispatcher aborts the `ctx.signal` of its requests that are
 * posted, at once if the request is its own, else on its next look (every
 * {@linkcode INTERRUPT_POLL_MS} while it has requests that asked for a signal).
 *
 * @module
 */

/** How often a dispatcher with signalled requests looks for interrupts posted by others. */
export const INTERRUPT_POLL_MS = 20;
/** Interrupts remembered (a ring: the oldest are forgotten first). */
const CAPACITY = 256;

/** Uniques of interrupted requests, shared between a session's threads. */
export class InterruptBoard {
  /** The shared memory: a write counter, then CAPACITY uniques as (low, high) words. */
  readonly buffer: SharedArrayBuffer;
  readonly #words: Int32Array;

  /** A new board, or a view of another thread's `buffer`. */
  constructor(buffer?: SharedArrayBuffer) {
    this.buffer = buffer ?? new SharedArrayBuffer(4 * (2 + 2 * CAPACITY));
    this.#words = new Int32Array(this.buffer);
  }

  /** Record that the kernel interrupted request `unique`. */
  post(unique: number): void {
    const at = Atomics.add(this.#words, 0, 1) % CAPACITY;
    // The high word last, never 0 (uniques are below 2^53): a reader that
    // sees it sees the whole entry.
    Atomics.store(this.#words, 2 + 2 * at, unique % 2 ** 32 | 0);
    Atomics.store(this.#words, 3 + 2 * at, Math.floor(unique / 2 ** 32) + 1);
  }

  /** Whether request `unique` was interrupted (among the last CAPACITY interrupts). */
  has(unique: number): boolean {
    const low = unique % 2 ** 32 | 0;
    const high = Math.floor(unique / 2 ** 32) + 1;
    for (let i = 0; i < CAPACITY; i++) {
      if (
        Atomics.load(this.#words, 3 + 2 * i) === high &&
        Atomics.load(this.#words, 2 + 2 * i) === low
      ) return true;
    }
    return false;
  }
}
