/**
 * FUSE-over-io_uring with a serving thread per kernel queue.
 *
 * The kernel keeps one queue per CPU and hands a request to the queue of
 * the CPU its caller runs on. Here each queue (or group of queues, with
 * fewer threads than CPUs) is served by a Worker pinned to those CPUs,
 * running {@linkcode UringQueue} on a ring of its own; see there for what
 * it serves itself. This side, on the thread that holds the FileSystem,
 * owns the pinned memory of every entry, starts and stops the Workers, and
 * answers the requests they hand over: each arrives as a completion on
 * this thread's ring (the one the /dev/fuse loop reaps), is dispatched over
 * the entry's own memory, and its reply goes back to the entry's Worker as
 * a MSG_RING, which commits it.
 *
 * @module
 */

import type { SystemError } from "../ffi/errno.ts";
import { clearSuidSgid } from "../ffi/libc.ts";
import { PinnedRegion } from "../ffi/memory.ts";
import { prepMsgRing, type Ring } from "../ffi/ring.ts";
import { InHeader, UringReqHeader } from "../ops/abi.ts";
import type { BackingIo } from "../ops/backing_io.ts";
import type { Dispatcher } from "../ops/dispatch.ts";
import type { Exchange } from "../ops/exchange.ts";
import { QUEUE_WORKER_SOURCE } from "./gen/queue_worker_source.ts";
import { pinnedRead, pinnedWrite, type RingIo } from "./ring_io.ts";
import { uringPayloadSize, writeUringReply } from "./uring_commands.ts";
import { QueueCounter, type UringQueueMessage, type UringQueueSetup } from "./uring_queue.ts";
import type { UringCounters } from "./uring_transport.ts";

/** Counters of one kernel queue. */
export interface QueueCounters extends UringCounters {
  /** The kernel queue (= the CPU its requests come from). */
  qid: number;
  /** The CPUs its thread runs on. */
  cpus: number[];
  /** Requests handed to the FileSystem's thread. */
  forwarded: number;
}

/** Options of the per-queue io_uring transport. */
export interface UringWorkersOptions {
  /** Number of kernel queues (possible CPUs). */
  queues: number;
  /** Serving threads: queue q is served by thread q mod threads. */
  threads: number;
  /** Entries per queue. */
  queueDepth: number;
  /** Payload bytes per entry. */
  slotSize: number;
  /** `pread`/`pwrite` on the queue threads instead of READ_FIXED/WRITE_FIXED. */
  direct: boolean;
  /** Log the requests the queue threads serve themselves (`-d`). */
  debug?: boolean;
  /** Milliseconds to wait for a thread to register its entries (default 10000). */
  startTimeoutMs?: number;
}

/** One queue thread, as seen from the session's thread. */
interface QueueThread {
  worker: Worker;
  qids: number[];
  cpus: number[];
  headers: PinnedRegion;
  payloads: PinnedRegion;
  iovecs: PinnedRegion;
  ringFd: number;
  commitUserData: number;
  stopUserData: number;
  faultUserData: number;
  ended: Promise<void>;
}

/** A request handed over by a queue thread: its entry's memory, as an Exchange. */
class ForwardedEntry implements Exchange {
  header: DataView;
  headerOffset: number;
  arg: DataView;
  argOffset: number;
  argLength = 0;
  data: Uint8Array;
  dataOffset: number;
  dataLength = 0;
  readonly out: DataView;
  readonly outBytes: Uint8Array;
  readonly outOffset: number;
  readonly outCapacity: number;
  readonly #owner: UringWorkers;
  readonly #thread: QueueThread;
  readonly #local: number;
  readonly #payload: bigint;

  constructor(owner: UringWorkers, thread: QueueThread, local: number, slotSize: number) {
    this.#owner = owner;
    this.#thread = thread;
    this.#local = local;
    this.header = this.arg = thread.headers.view;
    this.headerOffset = local * UringReqHeader.SIZE;
    this.argOffset = this.headerOffset + UringReqHeader.op_in;
    this.data = this.outBytes = thread.payloads.bytes;
    this.out = thread.payloads.view;
    this.dataOffset = this.outOffset = local * slotSize;
    this.outCapacity = slotSize;
    this.#payload = thread.payloads.address + BigInt(local * slotSize);
  }

  get io(): BackingIo {
    return this.#owner.io;
  }

  reply(_unique: number, error: number, length: number): void {
    writeUringReply(this.header, this.headerOffset, error, length);
    this.#owner.send(this.#thread, this.#thread.commitUserData, this.#local);
  }

  replyFromFd(unique: number, fd: number, offset: number, length: number): void | Promise<void> {
    this.#owner.slotReads++;
    const n = pinnedRead(this.#owner.ringIo, fd, this.#payload, length, offset);
    if (typeof n === "number") return this.reply(unique, 0, n);
    return n.then(
      (n) => this.reply(unique, 0, n),
      (e: SystemError) => this.reply(unique, -e.errno, 0),
    );
  }

  writeDataToFd(fd: number, offset: number, killSuidgid: boolean): number | Promise<number> {
    if (killSuidgid) {
      clearSuidSgid(fd, this.header.getUint32(this.headerOffset + InHeader.gid, true));
    }
    this.#owner.slotWrites++;
    return pinnedWrite(this.#owner.ringIo, fd, this.#payload, this.dataLength, offset);
  }

  noReply(): void {
    // FORGET travels over /dev/fuse; should one come here, answer to free the entry.
    this.reply(0, -5, /* EIO */ 0);
  }
}

/** The per-queue io_uring transport, seen from the session's thread. */
export class UringWorkers {
  /** Number of kernel queues. */
  readonly queues: number;
  /** Entries per queue. */
  readonly depth: number;
  /** Payload bytes per entry. */
  readonly slotSize: number;
  /** Backing calls of the FileSystem on this thread. */
  readonly io: BackingIo;
  /** This thread's ring, when backing calls go through it (else direct). */
  readonly ringIo: RingIo | null;
  /** Reads this thread made into handed-over entries' slots (FdSource answers). */
  slotReads = 0;
  /** Writes this thread made from handed-over entries' slots (FdSink answers). */
  slotWrites = 0;
  #options: UringWorkersOptions;
  #fuseFd: number;
  #dispatcher: Dispatcher;
  #ring: Ring;
  #kick: () => void;
  #threads: QueueThread[] = [];
  #entries: ForwardedEntry[] = [];
  #counters: SharedArrayBuffer;
  #forwardUserData: number;
  /** Handed-over requests not yet answered (their memory must stay). */
  #held = 0;
  #onFatal: (reason: string) => void = () => {};

  /**
   * @param ring this thread's ring, reaped by the /dev/fuse loop
   * @param kick submits `ring` soon (at the end of the current task)
   */
  constructor(
    fuseFd: number,
    dispatcher: Dispatcher,
    ring: Ring,
    kick: () => void,
    io: BackingIo,
    ringIo: RingIo | null,
    options: UringWorkersOptions,
  ) {
    this.#fuseFd = fuseFd;
    this.#dispatcher = dispatcher;
    this.#ring = ring;
    this.#kick = kick;
    this.io = io;
    this.ringIo = ringIo;
    this.#options = options;
    this.queues = options.queues;
    this.depth = options.queueDepth;
    this.slotSize = Math.max(8192, options.slotSize);
    this.#counters = new SharedArrayBuffer(this.queues * QueueCounter.COUNT * 8);
    this.#forwardUserData = ring.register((res) => this.#forwarded(res));
  }

  /** Bytes of pinned memory held: headers and payloads of every entry. */
  get memory(): number {
    return this.#threads.reduce((sum, t) => sum + t.headers.size + t.payloads.size, 0);
  }

  /** Per-queue counters, and which CPUs serve each queue. */
  get perQueue(): QueueCounters[] {
    const c = new Float64Array(this.#counters);
    const out: QueueCounters[] = [];
    for (const t of this.#threads) {
      for (const qid of t.qids) {
        const o = qid * QueueCounter.COUNT;
        out.push({
          qid,
          cpus: t.cpus,
          requests: c[o + QueueCounter.requests],
          replies: c[o + QueueCounter.replies],
          fixedReads: c[o + QueueCounter.fixedReads],
          fixedWrites: c[o + QueueCounter.fixedWrites],
          forwarded: c[o + QueueCounter.forwarded],
        });
      }
    }
    return out.sort((a, b) => a.qid - b.qid);
  }

  /** The sums over all queues. */
  get counters(): UringCounters {
    const sum: UringCounters = {
      requests: 0,
      replies: 0,
      fixedReads: this.slotReads,
      fixedWrites: this.slotWrites,
    };
    for (const q of this.perQueue) {
      sum.requests += q.requests;
      sum.replies += q.replies;
      sum.fixedReads += q.fixedReads;
      sum.fixedWrites += q.fixedWrites;
    }
    return sum;
  }

  /** Handed-over requests this thread is still answering. */
  get holding(): number {
    return this.#held;
  }

  /** Number of serving threads. */
  get threads(): number {
    return this.#threads.length;
  }

  /**
   * Start the queue threads and have each register its entries. Resolves
   * with null when every queue has its entries in the kernel, or with why
   * not (then every thread has been stopped again).
   */
  async start(onFatal: (reason: string) => void): Promise<string | null> {
    this.#onFatal = onFatal;
    const n = Math.max(1, Math.min(this.#options.threads, this.queues));
    const url = URL.createObjectURL(
      new Blob([QUEUE_WORKER_SOURCE], { type: "application/javascript" }),
    );
    const replies: Promise<UringQueueMessage>[] = [];
    try {
      let base = 0;
      for (let w = 0; w < n; w++) {
        const qids = [];
        for (let q = w; q < this.queues; q += n) qids.push(q);
        const [thread, first] = this.#spawn(url, qids, base);
        this.#threads.push(thread);
        replies.push(first);
        base += qids.length * this.depth;
      }
    } catch (e) {
      URL.revokeObjectURL(url);
      await this.stop(0);
      return `cannot start the queue threads: ${(e as Error).message}`;
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const ms = this.#options.startTimeoutMs ?? 10_000;
    const timeout = new Promise<UringQueueMessage>((resolve) => {
      timer = setTimeout(
        () => resolve({ type: "refused", reason: `no answer from a queue thread in ${ms} ms` }),
        ms,
      );
    });
    const answers = await Promise.all(replies.map((r) => Promise.race([r, timeout])));
    clearTimeout(timer);
    URL.revokeObjectURL(url);
    const refused = answers.find((a) => a.type !== "ready");
    if (refused) {
      await this.stop(0);
      return refused.type === "refused" ? refused.reason : "a queue thread ended at start";
    }
    return null;
  }

  #spawn(url: string, qids: number[], base: number): [QueueThread, Promise<UringQueueMessage>] {
    const n = qids.length * this.depth;
    const headers = new PinnedRegion(n * UringReqHeader.SIZE);
    const payloads = new PinnedRegion(n * this.slotSize);
    const iovecs = new PinnedRegion(n * 48);
    // Two iovecs per entry for REGISTER (header, payload), then one per
    // entry for the fixed-buffer table.
    const v = iovecs.view;
    for (let i = 0; i < n; i++) {
      const payload = payloads.address + BigInt(i * this.slotSize);
      v.setBigUint64(i * 32, headers.address + BigInt(i * UringReqHeader.SIZE), true);
      v.setBigUint64(i * 32 + 8, BigInt(UringReqHeader.SIZE), true);
      v.setBigUint64(i * 32 + 16, payload, true);
      v.setBigUint64(i * 32 + 24, BigInt(this.slotSize), true);
      v.setBigUint64(n * 32 + i * 16, payload, true);
      v.setBigUint64(n * 32 + i * 16 + 8, BigInt(this.slotSize), true);
    }
    const worker = new Worker(url, { type: "module", name: `denofuse queue ${qids.join(",")}` });
    let endedResolve!: () => void;
    const thread: QueueThread = {
      worker,
      qids,
      cpus: qids,
      headers,
      payloads,
      iovecs,
      ringFd: -1,
      commitUserData: -1,
      stopUserData: -1,
      faultUserData: -1,
      ended: new Promise<void>((r) => endedResolve = r),
    };
    let firstResolve!: (m: UringQueueMessage) => void;
    const first = new Promise<UringQueueMessage>((r) => firstResolve = r);
    worker.onmessage = (e: MessageEvent<UringQueueMessage>) => {
      const m = e.data;
      if (m.type === "ready") {
        thread.ringFd = m.ringFd;
        thread.commitUserData = m.commitUserData;
        thread.stopUserData = m.stopUserData;
        thread.faultUserData = m.faultUserData;
      }
      if (m.type === "ended") endedResolve();
      firstResolve(m);
    };
    worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      const reason = `queue thread ${qids.join(",")} died: ${e.message}`;
      firstResolve({ type: "refused", reason });
      endedResolve();
      thread.ringFd = -1;
      this.#onFatal(reason);
    };
    for (let i = 0; i < n; i++) {
      this.#entries[base + i] = new ForwardedEntry(this, thread, i, this.slotSize);
    }
    const setup: UringQueueSetup = {
      fuseFd: this.#fuseFd,
      qids,
      cpus: thread.cpus,
      depth: this.depth,
      slotSize: this.slotSize,
      headers: headers.address,
      payloads: payloads.address,
      iovecs: iovecs.address,
      backingFds: this.#dispatcher.backingFds.buffer,
      counters: this.#counters,
      direct: this.#options.direct,
      mainRingFd: this.#ring.fd,
      forwardUserData: this.#forwardUserData,
      base,
      debug: this.#options.debug ?? false,
    };
    worker.postMessage(setup);
    return [thread, first];
  }

  /** A queue thread handed over entry `res`: dispatch it here. */
  #forwarded(res: number): void {
    const entry = this.#entries[res];
    if (!entry) return;
    this.#held++;
    const h = entry.header;
    const o = entry.headerOffset;
    const opcode = h.getUint32(o + InHeader.opcode, true);
    entry.argLength = Math.min(this.#dispatcher.argSize(opcode), UringReqHeader.op_in);
    entry.dataLength = uringPayloadSize(h, o);
    this.#dispatcher.dispatch(entry);
  }

  /** Post `userData`/`res` on a queue thread's ring (a commit, or stop). */
  send(thread: QueueThread, userData: number, res: number): void {
    if (userData === thread.commitUserData) this.#held--;
    if (thread.ringFd < 0) return; // that thread is gone
    prepMsgRing(this.#ring.sqes, this.#ring.sqe(), thread.ringFd, res, userData);
    this.#kick();
  }

  /**
   * Make queue thread `index` throw, as a crash would (for tests of what a
   * dying Worker does to the session).
   */
  injectFault(index: number): void {
    const t = this.#threads[index];
    prepMsgRing(this.#ring.sqes, this.#ring.sqe(), t.ringFd, 0, t.faultUserData);
    this.#ring.submit();
  }

  /**
   * End every queue thread: wait `graceMs` for them to see their entries
   * ended by the kernel (after unmount), then tell the rest to stop, then
   * terminate them.
   */
  async stop(graceMs = 2000): Promise<void> {
    const all = Promise.all(this.#threads.map((t) => t.ended)).then(() => true);
    const within = async (ms: number) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<boolean>((r) => timer = setTimeout(r, ms, false));
      try {
        return await Promise.race([all, late]);
      } finally {
        clearTimeout(timer); // a pending timer would keep the process alive
      }
    };
    if (!await within(graceMs)) {
      for (const t of this.#threads) {
        if (t.ringFd >= 0) {
          prepMsgRing(this.#ring.sqes, this.#ring.sqe(), t.ringFd, 0, t.stopUserData);
        }
      }
      this.#ring.submit();
      await within(1000);
    }
    for (const t of this.#threads) t.worker.terminate();
  }

  /**
   * Free the pinned memory (after {@linkcode stop}). Memory a FileSystem
   * method still holds (an unanswered request) is left mapped rather than
   * freed under it.
   */
  close(): void {
    if (this.#held > 0) return;
    for (const t of this.#threads) {
      t.headers.close();
      t.payloads.close();
      t.iovecs.close();
    }
  }
}
