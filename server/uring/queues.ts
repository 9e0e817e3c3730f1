/**
 * The io_uring transport of a session, seen from the session's thread: the
 * pinned memory of every ring entry, the per-queue counters, and the
 * threads that serve the kernel's queues (one queue per CPU).
 *
 * - `threads: 1`: one {@linkcode UringTransport} on this thread serves
 *   every queue and dispatches every request here.
 * - more: a Worker per queue (or group of queues), each pinned to its
 *   queues' CPUs and running a `UringTransport` of its own (see
 *   `queue_thread.ts`). Without a per-queue FileSystem, a Worker serves READ
 *   and WRITE of fd-backed handles itself and hands every other request to
 *   this thread: it arrives as a completion on this thread's ring (the one
 *   the /dev/fuse loop reaps), is dispatched over the entry's own memory,
 *   and its reply goes back as a MSG_RING, whereupon the Worker commits.
 *   With a per-queue FileSystem (`perQueue`), every Worker answers
 *   everything itself.
 *
 * @module
 */

import { pinThread } from "../../ffi/libc.ts";
import type { Ring } from "../../ffi/ring.ts";
import { prepMsgRing } from "../../ffi/sqe.ts";
import { InHeader, InitFlag, UringReqHeader } from "../../ops/abi.ts";
import type { BackingIo } from "../../ops/backing_io.ts";
import type { Connection, Dispatcher } from "../../ops/dispatch.ts";
import { QUEUE_WORKER_SOURCE } from "../../gen/queue_worker_source.ts";
import type { PerQueueFileSystem } from "../workers/messages.ts";
import type { UringThreadSetup } from "./thread.ts";
import { allReady, QueueWorkerHandle, stopAll, workerUrl } from "../workers/handle.ts";
import { pinnedRead, pinnedWrite, type RingIo } from "../io/ring_io.ts";
import { SlotExchange } from "../io/slot_exchange.ts";
import { writeUringReply } from "./commands.ts";
import type { EntryMemory } from "./entry_memory.ts";
import { entryMemoryFor, PAYLOAD_MODES } from "./modes/modes.ts";
import { QueueCounter, type UringCounters } from "./counters.ts";
import { fitUringRequest } from "./entry.ts";
import type { UringMode } from "./modes/mode.ts";
import { UringTransport } from "./transport.ts";

/** Counters of one kernel queue. */
export interface QueueCounters extends UringCounters {
  /** The kernel queue (its requests come from CPU `qid`). */
  qid: number;
  /** The CPUs its thread is pinned to (empty: the session's thread, not pinned). */
  cpus: number[];
  /** Requests handed to the FileSystem's thread. */
  forwarded: number;
}

const COUNTERS = [
  "requests",
  "replies",
  "fixedReads",
  "fixedWrites",
  "bufferSelects",
  "bufferKept",
  "zeroCopyReads",
  "zeroCopyWrites",
  "staged",
  "poolPayloads",
  "bytesThroughServer",
  "bytesZeroCopy",
] as const;

/** Options of a session's io_uring queues. */
export interface UringQueuesOptions {
  /** Number of kernel queues (possible CPUs). */
  queues: number;
  /** Serving threads: 1 (this thread), or Workers (queue q served by q mod threads). */
  threads: number;
  /** Entries per queue. */
  queueDepth: number;
  /** Payload bytes per entry. */
  slotSize: number;
  /**
   * The modes to try, best first: the first whose REGISTER the kernel
   * accepts serves (default: mainline only).
   */
  modes?: UringMode[];
  /** Buffers in each queue's pool in the buffer-pool modes (default: the depth). */
  poolBuffers?: number;
  /** Backing calls as ring operations or direct calls. */
  backingIo: "ring" | "direct";
  /** A FileSystem in every queue thread, instead of handing requests over. */
  perQueue?: PerQueueFileSystem;
  /** With `perQueue`, this thread serves the first group of queues (see `MountOptions`). */
  callingThreadServes?: boolean;
  /** Cache timeouts for the queue threads' dispatchers. */
  entryTimeout?: number;
  /** Cache timeouts for the queue threads' dispatchers. */
  attrTimeout?: number;
  /** Log requests (`-d`). */
  debug?: (line: string) => void;
  /** Milliseconds to wait for a thread to register its entries (default 10000). */
  startTimeoutMs?: number;
}

/** One queue Worker, as seen from the session's thread. */
interface QueueWorker {
  handle: QueueWorkerHandle;
  qids: number[];
  memory: EntryMemory;
}

/** A request handed over by a queue Worker: its entry's memory, as an Exchange. */
class HandedOverEntry extends SlotExchange {
  readonly #owner: UringQueues;
  readonly #worker: QueueWorker;
  readonly #local: number;
  readonly #payload: bigint;
  readonly #slotBytes: Uint8Array;
  readonly #slotOffset: number;

  constructor(owner: UringQueues, worker: QueueWorker, local: number) {
    const m = worker.memory;
    const headerOffset = local * UringReqHeader.SIZE;
    super(
      m.headers.view,
      headerOffset,
      headerOffset + UringReqHeader.op_in,
      m.payloads.view,
      local * m.slotSize,
      m.slotSize,
    );
    this.#owner = owner;
    this.#worker = worker;
    this.#local = local;
    this.#payload = m.payloads.address + BigInt(local * m.slotSize);
    this.#slotBytes = this.data;
    this.#slotOffset = this.dataOffset;
  }

  /** The request's data starts at the entry's slot again (a NOTIFY_REPLY moved it). */
  rewind(): void {
    this.setData(this.#slotBytes, this.#slotOffset);
  }

  get io(): BackingIo {
    return this.#owner.io;
  }

  reply(_unique: number, error: number, length: number): void {
    writeUringReply(this.header, this.headerOffset, error, length);
    this.#owner.commit(this.#worker, this.#local);
  }

  protected readInto(fd: number, offset: number, length: number): number | Promise<number> {
    this.#owner.slotReads++;
    return pinnedRead(this.#owner.ringIo, fd, this.#payload, length, offset);
  }

  protected writeFrom(fd: number, offset: number, length: number): number | Promise<number> {
    this.#owner.slotWrites++;
    return pinnedWrite(this.#owner.ringIo, fd, this.#payload, length, offset);
  }

  noReply(): void {
    // FORGET travels over /dev/fuse; should one come here, answer to free the entry.
    this.reply(0, -5, /* EIO */ 0);
  }
}

/** The io_uring queues of a session. */
export class UringQueues {
  /** Number of kernel queues. */
  readonly queues: number;
  /** Entries per queue. */
  readonly depth: number;
  /** Payload bytes per entry. */
  readonly slotSize: number;
  /** Backing calls of the FileSystem on this thread. */
  io: BackingIo;
  /** This thread's ring for backing calls, or null (direct calls). */
  readonly ringIo: RingIo | null;
  /** Reads this thread made into handed-over entries' slots (FdSource answers). */
  slotReads = 0;
  /** Writes this thread made from handed-over entries' slots (FdSink answers). */
  slotWrites = 0;
  #o: UringQueuesOptions;
  #fuseFd: number;
  #dispatcher: Dispatcher;
  #ring: Ring | null;
  #kick: () => void;
  #local: { transport: UringTransport; memory: EntryMemory }[] = [];
  /** The CPUs this thread is pinned to, serving their queues beside the Workers (or none). */
  #localCpus: number[] = [];
  #mode: UringMode = "mainline";
  #workers: QueueWorker[] = [];
  #entries: HandedOverEntry[] = [];
  #counters: SharedArrayBuffer;
  #handOverUserData = -1;
  /** Handed-over requests not yet answered (their memory must stay). */
  #held = 0;
  #onFatal: (reason: string) => void = () => {};

  /**
   * @param ring this thread's ring, reaped by the /dev/fuse loop (needed
   *   for Workers: handed-over requests arrive on it)
   * @param kick has what is prepared on `ring` submitted soon
   * @param io backing calls for the FileSystem on this thread
   */
  constructor(
    fuseFd: number,
    dispatcher: Dispatcher,
    ring: Ring | null,
    kick: () => void,
    io: BackingIo,
    ringIo: RingIo | null,
    options: UringQueuesOptions,
  ) {
    this.#fuseFd = fuseFd;
    this.#dispatcher = dispatcher;
    this.#ring = ring;
    this.#kick = kick;
    this.io = io;
    this.ringIo = ringIo;
    this.#o = options;
    this.queues = options.queues;
    this.depth = options.queueDepth;
    this.slotSize = Math.max(8192, options.slotSize);
    this.#counters = new SharedArrayBuffer(this.queues * QueueCounter.COUNT * 8);
  }

  /** Threads serving queues: this one (if it serves any) and the queue Workers. */
  get threads(): number {
    return (this.#local.length ? 1 : 0) + this.#workers.length;
  }

  /** The better modes tried before the one that serves, each with why it could not. */
  passedOver: string[] = [];

  /** How the queues take their requests (known once {@linkcode start} succeeded). */
  get mode(): UringMode {
    return this.#mode;
  }

  /** Whether a FileSystem runs in every queue thread. */
  get perQueue(): boolean {
    return this.#o.perQueue !== undefined && this.#workers.length > 0;
  }

  /** Bytes of pinned memory held: headers and payloads of every entry. */
  get memory(): number {
    return [...this.#local, ...this.#workers].reduce((sum, w) => sum + w.memory.size, 0);
  }

  /** Handed-over requests this thread is still answering. */
  get holding(): number {
    return this.#held;
  }

  /** Per-queue counters, and which CPUs serve each queue. */
  get perQueueCounters(): QueueCounters[] {
    const c = new Float64Array(this.#counters);
    const out: QueueCounters[] = [];
    const cpusOf = (qid: number) =>
      this.#workers.find((w) => w.qids.includes(qid))?.qids ??
        (this.#localCpus.includes(qid) ? this.#localCpus : []);
    for (let qid = 0; qid < this.queues; qid++) {
      const o = qid * QueueCounter.COUNT;
      const counts = Object.fromEntries(COUNTERS.map((name) => [name, c[o + QueueCounter[name]]]));
      out.push({
        qid,
        cpus: cpusOf(qid),
        forwarded: c[o + QueueCounter.forwarded],
        ...counts as Record<typeof COUNTERS[number], number>,
      });
    }
    return out;
  }

  /** The sums over all queues. */
  get counters(): UringCounters {
    const sum = Object.fromEntries(COUNTERS.map((name) => [name, 0])) as unknown as UringCounters;
    sum.fixedReads = this.slotReads;
    sum.fixedWrites = this.slotWrites;
    for (const q of this.perQueueCounters) {
      for (const name of COUNTERS) sum[name] += q[name];
    }
    return sum;
  }

  /**
   * Start serving: register every queue's entries with the kernel. Resolves
   * with null once they are all in place, or with why not (then nothing is
   * left running). `onFatal` is called if a queue thread dies later.
   */
  async start(connection: Connection, onFatal: (reason: string) => void): Promise<string | null> {
    this.#onFatal = onFatal;
    const reasons: string[] = [];
    const pools = (connection.flags & InitFlag.HAS_IO_URING_BUFPOOL) !== 0n;
    for (const mode of this.#o.modes ?? ["mainline"]) {
      if (PAYLOAD_MODES[mode].kernel === "bufpool" && !pools) {
        reasons.push(`${mode}: the kernel did not offer FUSE_HAS_IO_URING_BUFPOOL at INIT`);
        continue;
      }
      const why = this.#o.threads <= 1
        ? await this.#startHere(mode, this.#groups(mode, 1))
        : await this.#startWorkers(connection, mode);
      if (why === null) {
        this.#mode = mode;
        this.passedOver = reasons;
        return null;
      }
      reasons.push(`${mode}: ${why}`);
    }
    return reasons.join("; ");
  }

  /**
   * Serve on this thread: one transport for every queue (mainline), or one
   * per queue (the buffer-ring modes need a ring per queue).
   */
  async #startHere(mode: UringMode, groups: number[][]): Promise<string | null> {
    let why: string | null = null;
    for (const qids of groups) {
      let memory: EntryMemory;
      let transport: UringTransport;
      try {
        memory = this.#memory(mode, qids.length);
      } catch (e) {
        why = `cannot pin the ring entries' memory: ${(e as Error).message}`;
        break;
      }
      try {
        transport = new UringTransport({
          fuseFd: this.#fuseFd,
          qids,
          depth: this.depth,
          mode,
          memory: memory.addresses,
          dispatcher: this.#dispatcher,
          backingIo: this.#o.backingIo,
          counters: new Float64Array(this.#counters),
        });
      } catch (e) {
        memory.close();
        why = `cannot set up the ring: ${(e as Error).message}`;
        break;
      }
      this.#local.push({ transport, memory });
      why = transport.register();
      if (why) break;
    }
    if (why) {
      for (const { transport, memory } of this.#local.splice(0)) {
        await transport.close();
        memory.close();
      }
      return why;
    }
    // Backing calls of this thread's FileSystem go through the first transport's ring.
    this.io = this.#local[0].transport.io;
    for (const { transport } of this.#local) {
      transport.run().catch((e) => this.#onFatal(`io_uring transport failed: ${e}`));
    }
    return null;
  }

  /**
   * The queues of each serving thread: `threads` groups, queue q in group
   * q mod threads; one queue each in the buffer-ring modes (which need a
   * ring, so a thread, per queue, unless one thread serves them all).
   */
  #groups(mode: UringMode, threads: number): number[][] {
    const all = Array.from({ length: this.queues }, (_, q) => q);
    if (PAYLOAD_MODES[mode].ringPerQueue) return all.map((q) => [q]);
    const n = Math.min(threads, this.queues);
    return Array.from({ length: n }, (_, g) => all.filter((q) => q % n === g));
  }

  async #startWorkers(connection: Connection, mode: UringMode): Promise<string | null> {
    const ring = this.#ring;
    if (!ring) return "no ring to take the queue threads' requests";
    if (this.#handOverUserData < 0) {
      this.#handOverUserData = ring.register((res) => this.#handedOver(res));
    }
    const groups = this.#groups(mode, this.#o.threads);
    // With a FileSystem in every thread, this thread may serve the first
    // group itself, on its CPUs: one isolate fewer than a Worker per group.
    const here = this.#o.callingThreadServes && this.#o.perQueue !== undefined &&
        !PAYLOAD_MODES[mode].ringPerQueue
      ? groups.shift()!
      : null;
    const url = workerUrl(this.#o.perQueue?.source ?? QUEUE_WORKER_SOURCE);
    try {
      let base = 0;
      for (const qids of groups) {
        this.#spawn(url, qids, base, connection, mode);
        base += qids.length * this.depth;
      }
    } catch (e) {
      await this.stop(0);
      return `cannot start the queue threads: ${(e as Error).message}`;
    } finally {
      URL.revokeObjectURL(url);
    }
    let why = await allReady(
      this.#workers.map((w) => w.handle),
      this.#o.startTimeoutMs ?? 10_000,
    );
    if (!why && here) {
      why = await this.#startHere(mode, [here]);
      if (!why) {
        pinThread(here);
        this.#localCpus = here;
      }
    }
    if (why) {
      await this.stop(0);
      await this.close();
      this.#workers = [];
      this.#entries = [];
    }
    return why;
  }

  #spawn(
    url: string,
    qids: number[],
    base: number,
    connection: Connection,
    mode: UringMode,
  ): void {
    const memory = this.#memory(mode, qids.length);
    const setup: UringThreadSetup = {
      kind: "io_uring",
      fuseFd: this.#fuseFd,
      qids,
      cpus: qids,
      depth: this.depth,
      mode,
      memory: memory.addresses,
      backingFds: this.#dispatcher.backingFds.shared,
      backingIds: this.#dispatcher.backingIds?.shared,
      interrupts: this.#dispatcher.interrupts.buffer,
      counters: this.#counters,
      backingIo: this.#o.backingIo,
      handOver: { ringFd: this.#ring!.fd, userData: this.#handOverUserData, base },
      debug: this.#o.debug !== undefined,
      connection,
      entryTimeout: this.#o.entryTimeout,
      attrTimeout: this.#o.attrTimeout,
      data: this.#o.perQueue?.data,
    };
    const name = `queue thread ${qids.join(",")}`;
    const w: QueueWorker = {
      handle: new QueueWorkerHandle(url, name, setup, (why) => this.#onFatal(why)),
      qids,
      memory,
    };
    this.#workers.push(w);
    for (let i = 0; i < memory.n; i++) this.#entries[base + i] = new HandedOverEntry(this, w, i);
  }

  /** Buffers in each queue's pool (buffer-pool modes). */
  get poolBuffers(): number {
    return this.#o.poolBuffers ?? this.depth;
  }

  /** The entry memory of `queues` queues in `mode`. */
  #memory(mode: UringMode, queues: number): EntryMemory {
    return entryMemoryFor(mode, queues, this.depth, this.slotSize, this.poolBuffers);
  }

  /** A queue Worker handed over entry `res`: dispatch it here. */
  #handedOver(res: number): void {
    const entry = this.#entries[res];
    if (!entry) return;
    this.#held++;
    const opcode = entry.header.getUint32(entry.headerOffset + InHeader.opcode, true);
    // As the queue thread would have laid it out (a NOTIFY_REPLY's argument leads its payload).
    entry.rewind();
    const refused = fitUringRequest(entry, opcode, this.#dispatcher.argSize(opcode), this.slotSize);
    if (refused) return entry.reply(0, -refused, 0);
    this.#dispatcher.dispatch(entry);
  }

  /** Tell `w` that entry `local`'s reply is in place: it commits. */
  commit(w: QueueWorker, local: number): void {
    this.#held--;
    this.#send(w.handle, w.handle.commitUserData, local);
    this.#kick();
  }

  #send(w: QueueWorkerHandle, userData: number, res: number): void {
    const ring = this.#ring;
    if (w.ringFd < 0 || !ring) return; // that thread is gone
    prepMsgRing(ring.sqes, ring.sqe(), w.ringFd, res, userData);
  }

  /** Make queue Worker `index` throw, as a crash would (tests of what a dying Worker does). */
  injectFault(index: number): void {
    const w = this.#workers[index].handle;
    this.#send(w, w.faultUserData, 0);
    this.#ring?.submit();
  }

  /**
   * End every queue thread: wait `graceMs` for them to see their entries
   * ended by the kernel (after unmount), then tell the rest to stop, then
   * terminate them.
   */
  async stop(graceMs = 2000): Promise<void> {
    const here = Promise.all(this.#local.map((l) => l.transport.finished));
    await stopAll(this.#workers.map((w) => w.handle), graceMs, (w) => {
      this.#send(w, w.stopUserData, 0);
      this.#ring?.submit();
    });
    await here;
  }

  /**
   * Free the pinned memory (after {@linkcode stop}). Memory a FileSystem
   * method still holds (an unanswered request) is left mapped rather than
   * freed under it.
   */
  async close(): Promise<void> {
    for (const { transport, memory } of this.#local) {
      if (await transport.close()) memory.close();
    }
    if (this.#held > 0) return;
    for (const w of this.#workers) w.memory.close();
  }
}
