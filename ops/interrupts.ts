/**
 * INTERRUPT: which requests the kernel asked to cancel, in memory every
 * serving thread can read.
 *
 * The kernel sends INTERRUPT over /dev/fuse (to the session's thread) while
 * the request it names may be running in any thread: a queue thread's own
 * FileSystem, a /dev/fuse thread. The session's dispatcher posts the unique
 * here and wakes every thread that waits on the board ({@linkcode
 * InterruptBoard.posted}); each dispatcher aborts the `ctx.signal` of its
 * requests that are posted. Nothing polls: a thread with no signalled
 * request does not look at all, and one with some sleeps until a post.
 *
 * @module
 */

/** Interrupts remembered (a ring: the oldest are forgotten first). */
const CAPACITY = 256;

/** Uniques of interrupted requests, shared between a session's threads. */
export class InterruptBoard {
  /**
   * The shared memory: a write counter, a count of completed posts, then
   * CAPACITY uniques as (low, high) words.
   */
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
    Atomics.add(this.#words, 1, 1);
    Atomics.notify(this.#words, 1);
  }

  /**
   * Settles once an interrupt is posted after `seen` (a {@linkcode posts}
   * reading); at once if one already was. A waiting thread is woken by the
   * post itself, and the wait does not keep a process or Worker alive.
   */
  posted(seen: number): Promise<unknown> {
    const wait = Atomics.waitAsync(this.#words, 1, seen);
    return wait.async ? wait.value : Promise.resolve();
  }

  /** How many interrupts have been posted (complete, with their uniques), for {@linkcode posted}. */
  get posts(): number {
    return Atomics.load(this.#words, 1);
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
