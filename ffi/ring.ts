/**
 * An io_uring ring driven from TypeScript.
 *
 * liburing sets the ring up, submits and registers buffers; everything it only
 * has as static inline helpers is here, over the mmapped rings: getting an
 * SQE and reaping CQEs (filling an SQE is `sqe.ts`). The ring uses 128-byte
 * SQEs and 32-byte CQEs, as FUSE's uring commands require.
 *
 * Completions are dispatched by `user_data`: an id from {@linkcode Ring.register}
 * names a persistent handler (a FUSE ring entry); {@linkcode Ring.submitOp}
 * runs a one-shot operation and returns its result as a Promise.
 *
 * All submissions must come from the thread that created the ring (the
 * kernel ties FUSE's uring commands to the submitting task). Waiting is done
 * by a non-blocking FFI call on Deno's pool, so the event loop never stalls.
 *
 * @module
 */

import { Errno, SystemError } from "./errno.ts";
import { checkUring, liburing } from "./liburing.ts";
import { PinnedRegion } from "./memory.ts";
import { IORING_SETUP, Sqe } from "./uring_abi.ts";

const IORING_ENTER_GETEVENTS = 1;

// struct io_uring (liburing 2.3; checked by tests/unit/ring_test.ts with offsetof).
const R = {
  SIZE: 216,
  sq: 0,
  cq: 104,
  ringFd: 196,
  sqKhead: 0,
  sqKtail: 8,
  sqSqes: 56,
  sqSqeHead: 64,
  sqSqeTail: 68,
  sqRingMask: 88,
  sqRingEntries: 92,
  cqKhead: 0,
  cqKtail: 8,
  cqCqes: 48,
  cqRingMask: 72,
  cqRingEntries: 76,
} as const;

/** The liburing 2.3 `struct io_uring` offsets this file relies on (for tests). */
export const IoUringLayout = R;

// Scratch in the ring's own pinned page: struct io_uring @0, params @256.
const TIMESPEC = 512;
const CQE_PTR = 528;
const SQE_SIZE = 128;
const CQE_SIZE = 32;
const TWO_32 = 4294967296;
const EINTR = 4;
const EAGAIN = 11;
const EBUSY = 16;
/** Tries (about 1 ms apart) before a full submission queue is an error. */
const ROOM_TRIES = 1000;
/** Something to `Atomics.wait` on for a short pause. */
const pause = new Int32Array(new SharedArrayBuffer(4));

type Handler = (res: number, flags: number) => void;

function u64(view: DataView, o: number): bigint {
  return view.getBigUint64(o, true);
}

/** A view of `len` bytes of kernel-mapped ring memory at address `addr`. */
function mapped(addr: bigint, len: number): ArrayBuffer {
  return Deno.UnsafePointerView.getArrayBuffer(Deno.UnsafePointer.create(addr)!, len);
}

/** Options of a ring. */
export interface RingOptions {
  /** Submission queue size (a power of two). */
  entries: number;
  /** Completion queue size (default 2 × entries). */
  cqEntries?: number;
}

/** One io_uring with 128-byte SQEs and 32-byte CQEs. */
export class Ring {
  /** The ring's own fd. */
  readonly fd: number;
  /** Submission queue size. */
  readonly sqEntries: number;
  /** Completion queue size. */
  readonly cqEntries: number;
  /** Pointer to liburing's `struct io_uring`, for liburing calls. */
  readonly pointer: Deno.PointerObject;
  #mem: PinnedRegion;
  #sqes: DataView;
  #sqeBytes: Uint8Array;
  #sqHead: Uint32Array;
  #sqMask: number;
  #sqeTail: number;
  #cqes: DataView;
  #cqHead: Uint32Array;
  #cqTail: Uint32Array;
  #cqMask: number;
  #handlers: (Handler | undefined)[] = [];
  #kept: unknown[] = [];
  #freeIds: number[] = [];
  #pending = 0;
  #closed = false;
  #waiting: Promise<number> | null = null;
  /** Completions moved out of the CQ under backpressure: (id, res, flags) triples. */
  #stashed: number[] = [];
  /** Times {@linkcode sqe} found the kernel refusing SQEs and waited (a counter). */
  backpressure = 0;

  /** Set up a ring through `io_uring_queue_init_params`. */
  constructor(options: RingOptions) {
    const uring = liburing();
    // struct io_uring, then struct io_uring_params (120 bytes) after it.
    this.#mem = new PinnedRegion(4096);
    this.pointer = this.#mem.pointer;
    const params = this.#mem.at(256);
    const pv = this.#mem.view;
    const cqEntries = options.cqEntries ?? options.entries * 2;
    pv.setUint32(256 + 4, cqEntries, true); // cq_entries
    pv.setUint32(
      256 + 8,
      IORING_SETUP.SQE128 | IORING_SETUP.CQE32 | IORING_SETUP.CQSIZE | IORING_SETUP.SUBMIT_ALL,
      true,
    );
    checkUring(
      uring.io_uring_queue_init_params(options.entries, this.pointer, params),
      "io_uring_queue_init_params",
    );
    const v = pv;
    this.fd = v.getInt32(R.ringFd, true);
    this.sqEntries = v.getUint32(R.sq + R.sqRingEntries, true);
    this.cqEntries = v.getUint32(R.cq + R.cqRingEntries, true);
    this.#sqMask = v.getUint32(R.sq + R.sqRingMask, true);
    this.#cqMask = v.getUint32(R.cq + R.cqRingMask, true);
    this.#sqeTail = v.getUint32(R.sq + R.sqSqeTail, true);
    const sqes = mapped(u64(v, R.sq + R.sqSqes), this.sqEntries * SQE_SIZE);
    this.#sqes = new DataView(sqes);
    this.#sqeBytes = new Uint8Array(sqes);
    this.#sqHead = new Uint32Array(mapped(u64(v, R.sq + R.sqKhead), 4));
    this.#cqHead = new Uint32Array(mapped(u64(v, R.cq + R.cqKhead), 4));
    this.#cqTail = new Uint32Array(mapped(u64(v, R.cq + R.cqKtail), 4));
    this.#cqes = new DataView(mapped(u64(v, R.cq + R.cqCqes), this.cqEntries * CQE_SIZE));
  }

  /** The SQE memory, for `prep*` helpers: offsets come from {@linkcode sqe}. */
  get sqes(): DataView {
    return this.#sqes;
  }

  /** Operations submitted and not yet completed. */
  get inFlight(): number {
    return this.#pending;
  }

  /**
   * Claim the next SQE, zeroed, and return its byte offset in {@linkcode sqes}.
   * When the submission queue is full it submits first; while the kernel
   * refuses more (a backlog of completions, short of memory) it applies
   * backpressure: completions are moved out of the CQ (their handlers run
   * at the next {@linkcode reap}) and the submit is retried, waiting briefly
   * between tries. Throws EBUSY only if the kernel takes nothing for about
   * a second: the ring is then wedged, not merely busy.
   */
  sqe(): number {
    if (((this.#sqeTail - Atomics.load(this.#sqHead, 0)) >>> 0) >= this.sqEntries) {
      this.#makeRoom();
    }
    const at = (this.#sqeTail & this.#sqMask) * SQE_SIZE;
    this.#sqeTail = (this.#sqeTail + 1) >>> 0;
    this.#sqeBytes.fill(0, at, at + SQE_SIZE);
    return at;
  }

  #makeRoom(): void {
    for (let tries = 0;; tries++) {
      this.submit();
      if (((this.#sqeTail - Atomics.load(this.#sqHead, 0)) >>> 0) < this.sqEntries) return;
      if (tries === ROOM_TRIES) {
        throw new SystemError("io_uring_get_sqe", 16, /* EBUSY */ "submission queue stays full");
      }
      this.backpressure++;
      this.#stash();
      Atomics.wait(pause, 0, 0, 1);
    }
  }

  /** Move every CQE into the stash, so the kernel can post the ones it holds back. */
  #stash(): void {
    const cqes = this.#cqes;
    let head = Atomics.load(this.#cqHead, 0);
    const tail = Atomics.load(this.#cqTail, 0);
    while (head !== tail) {
      const o = (head & this.#cqMask) * CQE_SIZE;
      this.#stashed.push(
        cqes.getUint32(o, true) + cqes.getUint32(o + 4, true) * TWO_32,
        cqes.getInt32(o + 8, true),
        cqes.getUint32(o + 12, true),
      );
      head = (head + 1) >>> 0;
    }
    Atomics.store(this.#cqHead, 0, head);
  }

  /**
   * Hand every prepared SQE to the kernel; returns how many it took. A
   * kernel that is busy (EAGAIN, EBUSY) or interrupted takes none: they stay
   * queued and the next submit offers them again. Other failures throw.
   */
  submit(): number {
    // liburing's submit flushes sqe_head..sqe_tail into the ring, and offers
    // everything the kernel has not consumed yet.
    this.#mem.view.setUint32(R.sq + R.sqSqeTail, this.#sqeTail, true);
    const ret = liburing().io_uring_submit(this.pointer);
    if (ret >= 0) return ret;
    if (ret === -EAGAIN || ret === -EBUSY || ret === -EINTR) return 0;
    return checkUring(ret, "io_uring_submit");
  }

  /** Whether SQEs were prepared that the kernel has not taken yet. */
  get hasUnsubmitted(): boolean {
    return this.#sqeTail !== Atomics.load(this.#sqHead, 0);
  }

  /** Reserve a user_data id whose completions go to `handler` until released. */
  register(handler: Handler): number {
    const id = this.#freeIds.pop() ?? this.#handlers.length;
    this.#handlers[id] = handler;
    return id;
  }

  /** Release an id from {@linkcode register}. */
  unregister(id: number): void {
    this.#handlers[id] = undefined;
    this.#freeIds.push(id);
  }

  /** Count an SQE carrying `id` as in flight (call once per SQE prepared). */
  track(at: number, id: number): void {
    this.#sqes.setUint32(at + Sqe.userData, id, true);
    this.#sqes.setUint32(at + Sqe.userData + 4, 0, true);
    this.#pending++;
  }

  /**
   * Prepare one operation with `prep(sqeOffset)` and resolve with its result
   * (`res` ≥ 0), or reject with a SystemError for a negative `res`. It is
   * submitted with the next {@linkcode submit} (the serving loop submits).
   * `keep` (paths, buffers the SQE points at) is held until completion, so
   * the garbage collector cannot free memory the kernel still reads.
   */
  submitOp(call: string, prep: (at: number) => void, keep?: unknown): Promise<number> {
    return new Promise((resolve, reject) => {
      const at = this.sqe();
      prep(at);
      const id = this.register((res) => {
        this.#kept[id] = undefined;
        this.unregister(id);
        if (res < 0) reject(new SystemError(call, -res));
        else resolve(res);
      });
      this.#kept[id] = keep;
      this.track(at, id);
    });
  }

  /**
   * Submit the one operation `prep` prepares (it claims the SQE and returns
   * its offset) and wait for its `res` on this thread: for setup commands
   * the kernel answers at once (a FUSE queue's ADD_QUEUE). Completions of
   * other operations reaped meanwhile go to their handlers. Throws
   * ETIMEDOUT after `timeoutMs`.
   */
  runNow(prep: () => number, timeoutMs = 5000): number {
    let result: number | null = null;
    const id = this.register((res) => result = res);
    this.track(prep(), id);
    this.submit();
    const deadline = Date.now() + timeoutMs;
    while (this.reap() >= 0 && result === null) {
      if (Date.now() > deadline) {
        throw new SystemError("io_uring setup command", 110 /* ETIMEDOUT */);
      }
      this.waitHere(100_000);
    }
    this.unregister(id);
    return result!;
  }

  /**
   * Run the handlers of every completion in the CQ; returns how many. CQEs are
   * read before the head is advanced, so the kernel never overwrites one that
   * is still being read.
   */
  reap(): number {
    let n = 0;
    if (this.#stashed.length > 0) n = this.#reapStash();
    const cqes = this.#cqes;
    let head = Atomics.load(this.#cqHead, 0);
    const tail = Atomics.load(this.#cqTail, 0);
    while (head !== tail) {
      const o = (head & this.#cqMask) * CQE_SIZE;
      const id = cqes.getUint32(o, true) + cqes.getUint32(o + 4, true) * TWO_32;
      const res = cqes.getInt32(o + 8, true);
      const flags = cqes.getUint32(o + 12, true);
      head = (head + 1) >>> 0;
      Atomics.store(this.#cqHead, 0, head);
      this.#pending--;
      n++;
      const handler = this.#handlers[id];
      if (handler) handler(res, flags);
    }
    return n;
  }

  /**
   * The ring cannot go on (a submit failed for good): complete everything
   * in flight with `-errno` (without the kernel), so that no caller waits
   * for a completion that cannot come. One-shot operations reject.
   */
  failAll(errno: number): void {
    this.#stashed = [];
    this.#pending = 0;
    for (const handler of this.#handlers.slice()) {
      try {
        handler?.(-errno, 0);
      } catch { /* every handler gets its turn */ }
    }
  }

  /** Run the handlers of stashed completions (see {@linkcode sqe}), oldest first. */
  #reapStash(): number {
    const stashed = this.#stashed;
    this.#stashed = [];
    for (let i = 0; i < stashed.length; i += 3) {
      this.#pending--;
      this.#handlers[stashed[i]]?.(stashed[i + 1], stashed[i + 2]);
    }
    return stashed.length / 3;
  }

  /**
   * Wait on Deno's blocking pool until at least one completion is queued.
   * Only one wait runs at a time; concurrent callers share it.
   */
  wait(): Promise<number> {
    if (this.#waiting) return this.#waiting;
    if (
      this.#stashed.length > 0 || Atomics.load(this.#cqHead, 0) !== Atomics.load(this.#cqTail, 0)
    ) {
      return Promise.resolve(0);
    }
    this.#waiting = liburing().io_uring_enter_wait(this.fd, 0, 1, IORING_ENTER_GETEVENTS, null)
      .finally(() => this.#waiting = null);
    return this.#waiting;
  }

  /**
   * Wait on this thread for up to `micros` µs (`Infinity`: until one comes)
   * for a completion; returns whether one is queued. Because the kernel
   * runs this ring's task work while the submitting thread waits in
   * `io_uring_enter`, a request that arrives meanwhile is delivered without
   * waking any other thread. It blocks the event loop meanwhile: only a
   * thread with nothing else to do waits without a limit.
   */
  waitHere(micros: number): boolean {
    if (this.#stashed.length > 0) return true;
    if (Atomics.load(this.#cqHead, 0) !== Atomics.load(this.#cqTail, 0)) return true;
    let timeout: Deno.PointerValue = null;
    if (micros !== Infinity) {
      const v = this.#mem.view;
      v.setBigInt64(TIMESPEC, 0n, true);
      v.setBigInt64(TIMESPEC + 8, BigInt(micros * 1000), true);
      timeout = this.#mem.at(TIMESPEC);
    }
    liburing().io_uring_wait_cqe_timeout(this.pointer, this.#mem.at(CQE_PTR), timeout);
    return Atomics.load(this.#cqHead, 0) !== Atomics.load(this.#cqTail, 0);
  }

  /**
   * Register the calling thread's current credentials (including its fsuid
   * and fsgid) as a personality; an SQE carrying the returned id in its
   * `personality` field runs with them.
   */
  registerPersonality(): number {
    return checkUring(
      liburing().io_uring_register_personality(this.pointer),
      "io_uring_register_personality",
    );
  }

  /** Register `count` empty slots in the fixed-buffer table. */
  registerSparseBuffers(count: number): void {
    checkUring(
      liburing().io_uring_register_buffers_sparse(this.pointer, count),
      "io_uring_register_buffers_sparse",
    );
  }

  /**
   * Fill fixed-buffer slots `offset..` with the buffers in `iovecs` (a pinned
   * array of `count` struct iovec).
   */
  updateBuffers(offset: number, iovecs: Deno.PointerObject, count: number): void {
    const tags = new PinnedRegion(count * 8);
    try {
      const done = checkUring(
        liburing().io_uring_register_buffers_update_tag(
          this.pointer,
          offset,
          iovecs,
          tags.pointer,
          count,
        ),
        "io_uring_register_buffers_update_tag",
      );
      // The kernel stops at the first buffer it cannot pin and reports how
      // many it did; the rest would stay empty (EFAULT on first use).
      if (done < count) {
        throw new SystemError(
          "io_uring_register_buffers_update_tag",
          Errno.ENOMEM,
          `${done} of ${count} buffers pinned (RLIMIT_MEMLOCK?)`,
        );
      }
    } finally {
      tags.close();
    }
  }

  /**
   * Tear the ring down. Any wait in progress is woken with a NOP first, so no
   * pool thread is left in `io_uring_enter` on a closed ring.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#waiting) {
      const at = this.sqe();
      this.track(at, 0xffffffff);
      this.submit();
      await this.#waiting.catch(() => {});
    }
    liburing().io_uring_queue_exit(this.pointer);
    this.#mem.close();
  }
}
