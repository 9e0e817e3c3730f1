/**
 * FUSE-over-io_uring (Linux 6.14+): requests arrive as completions of
 * REGISTER / COMMIT_AND_FETCH uring commands on the `/dev/fuse` fd, and each
 * reply is committed with the command that fetches the next request.
 *
 * A {@linkcode UringTransport} serves a set of kernel queues (one queue per
 * CPU) from the thread that made it, on a ring of its own: all of them on
 * the session's thread with `threads: 1`, or one queue per Worker (see
 * `thread.ts`). Each queue gets `depth` ring entries. Where a request's
 * payload lives, and how file data moves in and out of it, is the mode's
 * business (`modes/`); this loop is the same for all of them:
 *
 * 1. a REGISTER or COMMIT_AND_FETCH completes: a request is in entry `id`;
 * 2. the mode places it (its data and reply memory);
 * 3. with a FileSystem here, or for READ and WRITE of an fd-backed handle,
 *    the dispatcher answers it on this thread (file data moving through the
 *    mode's `transfer`: READ_FIXED / WRITE_FIXED, no copy in JavaScript);
 *    otherwise it is handed with MSG_RING to the thread that holds the
 *    FileSystem, which writes the reply into the entry and answers with a
 *    MSG_RING on this ring;
 * 4. the mode finishes the reply (zero-copy: into the client's pages) and
 *    this loop commits it with COMMIT_AND_FETCH.
 *
 * @module
 */

import { Errno, errnoName, SystemError } from "../../ffi/errno.ts";
import { liburing } from "../../ffi/liburing.ts";
import { readSmallFile } from "../../ffi/libc.ts";
import { Ring } from "../../ffi/ring.ts";
import { prepMsgRing, prepReadFixed, prepWriteFixed } from "../../ffi/sqe.ts";
import { InHeader, OutHeader, UringReqHeader } from "../../ops/abi.ts";
import type { BackingIo } from "../../ops/backing_io.ts";
import type { Dispatcher } from "../../ops/dispatch.ts";
import { DirectIo } from "../io/direct_io.ts";
import { RingIo } from "../io/ring_io.ts";
import {
  BUSY_WAIT_US,
  coalesced,
  makeYield,
  settleHandlers,
  trimBeforeSleep,
} from "../io/yield.ts";
import { prepCommit, writeUringReply } from "./commands.ts";
import { QueueCounter } from "./counters.ts";
import { type EntryOwner, fitUringRequest, UringEntry } from "./entry.ts";
import { type EntryAddresses, viewAt } from "./entry_memory.ts";
import {
  type ModeContext,
  PAYLOAD_MODES,
  type PayloadMode,
  type UringMode,
} from "./modes/modes.ts";

/** Completions handled before yielding to the event loop. */
const BATCH_BUDGET = 64;
/** The longest the serving loop runs before yielding to the event loop. */
const YIELD_EVERY_MS = 2;

/** Why the io_uring transport cannot be used here, or null if it can. */
export function uringUnavailable(): string | null {
  let enabled: string;
  try {
    enabled = readSmallFile("/sys/module/fuse/parameters/enable_uring").trim();
  } catch {
    return "this kernel has no FUSE-over-io_uring (needs Linux 6.14+ with CONFIG_FUSE_IO_URING)";
  }
  if (enabled !== "Y") {
    return "FUSE-over-io_uring is switched off; enable it with: " +
      "echo Y > /sys/module/fuse/parameters/enable_uring";
  }
  try {
    liburing();
  } catch (e) {
    return (e as Error).message;
  }
  return null;
}

/** The number of kernel queues: one per possible CPU (nr_cpu_ids). */
export function possibleCpus(): number {
  const text = readSmallFile("/sys/devices/system/cpu/possible").trim();
  let max = 0;
  for (const part of text.split(",")) {
    const last = Number(part.split("-").pop());
    if (Number.isInteger(last)) max = Math.max(max, last);
  }
  return max + 1;
}

/** Where requests this thread does not answer go (a queue Worker's FileSystem thread). */
export interface HandOver {
  /** The ring of the thread that holds the FileSystem. */
  ringFd: number;
  /** user_data of a handed-over request there; `res` is `base` + entry. */
  userData: number;
  /** This thread's first entry in the session's numbering. */
  base: number;
}

/** Options of the io_uring transport. */
export interface UringTransportOptions {
  /** The session's `/dev/fuse` fd. */
  fuseFd: number;
  /** Kernel queues served (queue q takes the requests of CPU q); one in the buffer-ring modes. */
  qids: number[];
  /** Entries per queue. */
  depth: number;
  /** How requests reach this transport (default `mainline`). */
  mode?: UringMode;
  /** The entries' memory: `qids.length × depth` entries, allocated by the session's thread. */
  memory: EntryAddresses;
  /**
   * Dispatches requests here: every request, or with `handOver` only READ
   * and WRITE of fd-backed handles (a dispatcher over no FileSystem serves
   * those from the session's shared table).
   */
  dispatcher: Dispatcher;
  /** Where requests go that the dispatcher here does not serve (a FileSystem on another thread). */
  handOver?: HandOver;
  /**
   * How backing calls and file data are done: "ring" (default) as
   * operations on this transport's ring, "direct" as system calls on the
   * serving thread (for sources where no call can block, such as tmpfs,
   * where io_uring would hand most of them to a worker thread and back).
   */
  backingIo?: "ring" | "direct";
  /**
   * How an idle loop waits: "pool" (default) on Deno's blocking pool, which
   * leaves the event loop free; "thread" in `io_uring_enter` on this thread
   * (a Worker that does nothing else): the kernel then delivers each
   * request on this very thread.
   */
  idleWait?: "pool" | "thread";
  /** Counters of every queue of the session (see {@linkcode QueueCounter}). */
  counters: Float64Array;
}

/** Serves a set of kernel queues over FUSE-over-io_uring, from the calling thread. */
export class UringTransport implements EntryOwner {
  /** Entries per queue. */
  readonly depth: number;
  /** Payload bytes per entry. */
  readonly slotSize: number;
  /** How requests reach this transport. */
  readonly mode: UringMode;
  /** Backing calls for the file system: on this transport's ring, or direct. */
  readonly io: BackingIo;
  /** user_data of the MSG_RINGs this ring takes: commit entry `res`, stop, fault. */
  readonly commitUserData: number;
  readonly stopUserData: number;
  readonly faultUserData: number;
  #o: UringTransportOptions;
  #ring: Ring;
  #ringIo: RingIo | null;
  #payloads: PayloadMode;
  #entries: UringEntry[] = [];
  #counters: Float64Array;
  #live = 0;
  #stopped = false;
  /** Requests dispatched on this thread, or staged, and not yet committed or handed over. */
  #pending = 0;
  #flush = coalesced(() => this.#pump(BATCH_BUDGET), (e) => {
    this.#failure ??= e;
    this.#stopped = true;
  });
  /** Why serving cannot go on (the ring failed outside the loop). */
  #failure: unknown = null;
  /** Bumped whenever an SQE is prepared: the loop's sign that handlers moved. */
  #prepared = 0;
  #failures: number[] | null = null;
  #done!: () => void;
  #finished = new Promise<void>((r) => this.#done = r);

  /**
   * Set up the ring, the entries, and what the mode registers in the ring.
   * Throws if any step fails (the caller falls back).
   */
  constructor(options: UringTransportOptions) {
    this.#o = options;
    this.depth = options.depth;
    this.mode = options.mode ?? "mainline";
    const m = options.memory;
    this.slotSize = m.slotSize;
    const n = m.n;
    if (n !== options.qids.length * options.depth) throw new RangeError("entry memory size");
    const spec = PAYLOAD_MODES[this.mode];
    if (spec.ringPerQueue && options.qids.length !== 1) {
      throw new RangeError(`${this.mode} needs a ring per queue`);
    }
    this.#counters = options.counters;
    const entries = 1 << Math.ceil(Math.log2(Math.max(64, n * 4)));
    this.#ring = new Ring({ entries, cqEntries: entries * 2 });
    this.#ringIo = options.backingIo === "direct"
      ? null
      : new RingIo(this.#ring, () => this.#flushSoon());
    this.io = this.#ringIo ?? new DirectIo();
    const headers = new DataView(viewAt(m.headers, n * UringReqHeader.SIZE));
    const own = new DataView(viewAt(m.payloads, n * m.slotSize));
    try {
      this.#payloads = spec.make(this.#context(own));
      for (let id = 0; id < n; id++) {
        const qid = options.qids[Math.floor(id / this.depth)];
        const address = m.payloads + BigInt(id * m.slotSize);
        const entry = new UringEntry(this, id, qid, headers, own, address, m.slotSize);
        this.#entries.push(entry);
        // Entry ids are 0..n-1 (user_data = fixed-buffer index); the rest follow.
        if (this.#ring.register((res, flags) => this.#arrived(entry, res, flags)) !== id) {
          throw new Error("ring ids out of step with entry ids");
        }
      }
      this.commitUserData = this.#ring.register((res) => this.#handedBack(this.#entries[res]));
      this.stopUserData = this.#ring.register(() => this.#stopped = true);
      this.faultUserData = this.#ring.register(() => {
        throw new Error("fault injected into a queue thread");
      });
      this.#payloads.setup();
    } catch (e) {
      this.#release();
      throw e;
    }
  }

  /** What the mode may use of this transport. */
  #context(own: DataView<ArrayBuffer>): ModeContext {
    return {
      ring: this.#ring,
      fuseFd: this.#o.fuseFd,
      memory: this.#o.memory,
      depth: this.depth,
      qids: this.#o.qids,
      own,
      ownBytes: new Uint8Array(own.buffer),
      ringIo: this.#ringIo,
      count: (entry, counter) => this.#count(entry, counter),
      add: (entry, counter, amount) => this.#count(entry, counter, amount),
      fixed: (read, fd, address, length, offset, slot) =>
        this.#fixed(read, fd, address, length, offset, slot),
      flushSoon: () => this.#flushSoon(),
    };
  }

  /** This transport's ring fd (the target of MSG_RINGs from the session's thread). */
  get ringFd(): number {
    return this.#ring.fd;
  }

  /**
   * Register every entry with the kernel. Returns null when they are all in
   * place, or why the kernel refused some (a refused REGISTER completes
   * during submit; accepted ones stay pending until a request arrives).
   */
  register(): string | null {
    for (const entry of this.#entries) {
      this.#ring.track(this.#payloads.prepRegister(this.#o.fuseFd, entry), entry.id);
      this.#live++;
    }
    this.#ring.submit();
    const failures: number[] = [];
    this.#failures = failures;
    this.#ring.reap();
    this.#failures = null;
    if (failures.length === 0) return null;
    const names = [...new Set(failures.map(errnoName))].join(", ");
    return `REGISTER (${this.mode}) failed for ${failures.length} of ${this.#entries.length} ` +
      `entries: ${names}`;
  }

  /** Serve until every entry has been ended by the kernel (unmount), or stopped. */
  async run(): Promise<void> {
    const [yieldNow, closeYield] = makeYield();
    try {
      await this.#serve(yieldNow);
    } catch (e) {
      this.#failure ??= e;
    } finally {
      closeYield();
    }
    // A ring that failed completes nothing more: end what waits on it.
    if (this.#failure) this.#ring.failAll(Errno.ECANCELED);
    this.#done();
    if (this.#failure) throw this.#failure;
  }

  async #serve(yieldNow: () => Promise<void>): Promise<void> {
    const onThread = this.#o.idleWait === "thread";
    let busy = false;
    let lastYield = performance.now();
    while (this.#live > 0 && !this.#stopped) {
      const n = this.#pump(BATCH_BUDGET);
      if (this.#live === 0 || this.#stopped) break;
      if (n > 0) {
        busy = true;
        // Let timers, signals and pending promise work run regularly.
        if (n >= BATCH_BUDGET || performance.now() - lastYield > YIELD_EVERY_MS) {
          await yieldNow();
          lastYield = performance.now();
        } else {
          await null; // microtasks only: async replies get committed
        }
      } else if (this.#pending > 0 && await settleHandlers(() => this.#prepared)) {
        continue; // a handler reached the ring after a few microtask turns
      } else if (this.#ring.hasUnsubmitted) {
        // Resuming from that await took a few more microtask turns, in which
        // a handler may have replied: submit its commit before blocking, or
        // the client waits until some other request wakes this thread.
        continue;
      } else if (onThread) {
        // Nothing else runs on a queue thread: wait right here. With a
        // handler still pending (waiting on something other than the ring),
        // wake soon and let the event loop run; idle, sleep until the kernel
        // or the session (stop, fault: MSG_RING) puts a completion here,
        // so an idle mount costs no wake-ups.
        const working = this.#pending > 0;
        if (!working) trimBeforeSleep();
        const waited = this.#ring.waitHere(working ? BUSY_WAIT_US : Infinity);
        if (!waited) {
          await yieldNow();
          lastYield = performance.now();
        }
      } else if (busy && this.#ring.waitHere(BUSY_WAIT_US)) {
        continue; // the next request came while we waited in the kernel
      } else {
        busy = false;
        trimBeforeSleep();
        await this.#ring.wait(); // idle: wait on Deno's pool, loop free
      }
    }
  }

  /**
   * Submit what is prepared and reap what completed, until nothing moves or
   * `budget` completions were handled. Backing I/O that the kernel completes
   * inline (page-cache reads, tmpfs) is reaped at once, so a request and its
   * READ_FIXED and COMMIT often take a single pass with no wait at all.
   */
  #pump(budget: number): number {
    let total = 0;
    for (;;) {
      if (this.#ring.hasUnsubmitted) this.#ring.submit();
      const n = this.#ring.reap();
      total += n;
      if ((n === 0 && !this.#ring.hasUnsubmitted) || total >= budget) return total;
    }
  }

  /** Settles when {@linkcode run} has ended. */
  get finished(): Promise<void> {
    return this.#finished;
  }

  /**
   * Release the ring (after {@linkcode run}; pending commands are cancelled
   * with it) once every request dispatched here has replied, or `graceMs`
   * has passed. Resolves with whether the entry memory may be freed: false
   * while a method still holds an entry and could write into it.
   */
  async close(graceMs = 2000): Promise<boolean> {
    const deadline = Date.now() + graceMs;
    while (this.#pending > 0 && Date.now() < deadline) {
      try {
        this.#pump(BATCH_BUDGET); // the loop has ended: their backing calls complete here
      } catch {
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    await this.#release();
    return this.#pending === 0;
  }

  async #release(): Promise<void> {
    await this.#ring.close().catch(() => {});
    this.#payloads?.close(); // what the mode registered went with the ring
  }

  #count(entry: UringEntry, counter: number, amount = 1): void {
    this.#counters[entry.qid * QueueCounter.COUNT + counter] += amount;
  }

  /** A REGISTER or COMMIT_AND_FETCH completed: a request arrived, or the entry ended. */
  #arrived(entry: UringEntry, res: number, flags: number): void {
    if (res < 0) return this.#ended(entry, res);
    this.#count(entry, QueueCounter.requests);
    const opcode = entry.header.getUint32(entry.headerOffset + InHeader.opcode, true);
    this.#payloads.place(entry, opcode, flags);
    // READ and WRITE of fd-backed handles are served here, whatever else this
    // thread does; their file data moves by the mode's transfer, wherever it is.
    const arg = entry.headerOffset + UringReqHeader.op_in;
    const backed = this.#o.dispatcher.backingFds.backs(opcode, entry.header, arg);
    if (!backed && this.#o.handOver) return this.#handOver(entry);
    this.#pending++;
    const staging = backed ? null : this.#payloads.stageIn(entry, false);
    if (!staging) return this.#dispatch(entry, opcode);
    staging.then(
      () => this.#dispatch(entry, opcode),
      (e: SystemError) => this.reply(entry, -(e.errno ?? Errno.EIO), 0),
    );
  }

  /** Find the request's argument and data, and dispatch it here. */
  #dispatch(entry: UringEntry, opcode: number): void {
    const dispatcher = this.#o.dispatcher;
    const refused = fitUringRequest(entry, opcode, dispatcher.argSize(opcode), this.slotSize);
    if (refused) this.reply(entry, -refused, 0);
    else dispatcher.dispatch(entry);
  }

  /** The kernel ended `entry` (unmount, abort), or refused its REGISTER. */
  #ended(entry: UringEntry, res: number): void {
    this.#live--;
    if (this.#failures) this.#failures.push(-res);
    else if (res !== -Errno.ENOTCONN && res !== -Errno.ENODEV && res !== -Errno.ECANCELED) {
      console.error(new SystemError("fuse uring entry", -res, `queue ${entry.qid}`).message);
    }
  }

  /**
   * The FileSystem lives on another thread: hand the request over, from
   * the entry's own slot (the only payload memory that thread knows).
   */
  #handOver(entry: UringEntry): void {
    this.#count(entry, QueueCounter.forwarded);
    const staging = this.#payloads.stageIn(entry, true);
    if (!staging) return this.#sendOver(entry);
    // Pending until handed over: the serving loop must not sleep in the
    // kernel while the hand-over still waits for its microtasks.
    this.#pending++;
    staging.then(
      () => {
        this.#pending--;
        this.#sendOver(entry);
      },
      (e: SystemError) => this.reply(entry, -(e.errno ?? Errno.EIO), 0), // reply() balances it
    );
  }

  #sendOver(entry: UringEntry): void {
    const to = this.#o.handOver!;
    let at: number;
    try {
      at = this.#ring.sqe();
    } catch (e) {
      this.#failure ??= e;
      this.#stopped = true;
      return;
    }
    prepMsgRing(this.#ring.sqes, at, to.ringFd, to.base + entry.id, to.userData);
    this.#flushSoon();
  }

  /** Write the reply's header and commit `entry` (COMMIT_AND_FETCH), once the mode has finished it. */
  reply(entry: UringEntry, error: number, length: number): void {
    this.#pending--;
    writeUringReply(entry.header, entry.headerOffset, error, length);
    this.#finish(entry, error === 0 && length > 0 ? this.#payloads.stageOut(entry, length) : null);
  }

  /** A handed-over request's reply is in the entry's own slot: finish it and commit. */
  #handedBack(entry: UringEntry): void {
    const h = entry.header;
    const o = entry.headerOffset;
    const length = h.getInt32(o + OutHeader.error, true) === 0
      ? h.getUint32(o + OutHeader.len, true) - OutHeader.SIZE
      : 0;
    this.#finish(entry, length > 0 ? this.#payloads.handBack(entry, length) : null);
  }

  /** Commit `entry` now, or once the mode's `staging` is done (an EIO reply if it failed). */
  #finish(entry: UringEntry, staging: Promise<boolean> | null): void {
    if (!staging) return this.#commit(entry);
    // Pending until committed: the commit is prepared a few microtasks after
    // the copy completes, and the serving loop must not sleep before that.
    this.#pending++;
    staging.then((ok) => {
      if (!ok) writeUringReply(entry.header, entry.headerOffset, -Errno.EIO, 0);
      this.#pending--;
      this.#commit(entry);
    });
  }

  /** Commit `entry`, whose reply is already where the kernel reads it. */
  #commit(entry: UringEntry): void {
    let at: number;
    try {
      const h = entry.header;
      const slot = this.#payloads.commandSlot(entry);
      at = prepCommit(this.#ring, this.#o.fuseFd, h, entry.headerOffset, entry.qid, slot);
    } catch (e) {
      // The ring is wedged: end serving (the session aborts the connection).
      this.#failure ??= e;
      this.#stopped = true;
      return;
    }
    this.#ring.track(at, entry.id);
    this.#count(entry, QueueCounter.replies);
    this.#flushSoon();
  }

  /**
   * Move `length` bytes between `fd` and the request, as the mode moves
   * them. The read is not linked to the commit because the commit must
   * carry the byte count.
   */
  transfer(
    entry: UringEntry,
    read: boolean,
    fd: number,
    offset: number,
    length: number,
  ): number | Promise<number> {
    return this.#payloads.transfer(entry, read, fd, offset, length);
  }

  /** READ_FIXED from `fd` into fixed slot `slot` (`read`), or WRITE_FIXED from it to `fd`. */
  #fixed(
    read: boolean,
    fd: number,
    address: bigint,
    length: number,
    offset: number,
    slot: number,
  ): Promise<number> {
    const prep = read ? prepReadFixed : prepWriteFixed;
    const p = this.#ring.submitOp(
      read ? "read_fixed" : "write_fixed",
      (at) => prep(this.#ring.sqes, at, fd, address, length, offset, slot),
    );
    this.#flushSoon();
    return p;
  }

  /** Submit prepared SQEs once the current synchronous work is done. */
  #flushSoon(): void {
    this.#prepared++;
    this.#flush();
  }
}
