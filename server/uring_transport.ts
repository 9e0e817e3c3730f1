/**
 * FUSE-over-io_uring (Linux 6.14+): requests arrive as completions of
 * REGISTER / COMMIT_AND_FETCH uring commands on the `/dev/fuse` fd, and each
 * reply is committed with the command that fetches the next request.
 *
 * A {@linkcode UringTransport} serves a set of kernel queues (one queue per
 * CPU) from the thread that made it, on a ring of its own: all of them on
 * the session's thread with `threads: 1`, or one queue per Worker (see
 * `uring_workers.ts`). Each queue gets `depth` ring entries; an entry owns a
 * 288-byte header buffer and a payload buffer of `slotSize` bytes, both
 * pinned, and the payload buffers sit in the ring's sparse fixed-buffer
 * table at index = entry, so read data goes from a backing fd into the
 * reply with READ_FIXED and write data from the request to the backing fd
 * with WRITE_FIXED, never through JavaScript (with direct backing calls,
 * `pread`/`pwrite` into and out of the same slots on this thread).
 *
 * What happens to a request:
 * - READ and WRITE of a handle backed by an fd (`OpenReply.backingFd`) are
 *   served here, whatever else this thread does;
 * - with a dispatcher (a FileSystem on this thread), everything else is
 *   dispatched here;
 * - without one (a queue Worker of a FileSystem that lives on the session's
 *   thread), it is handed over with MSG_RING: that thread writes the reply
 *   into the entry and answers with a MSG_RING on this ring, which commits.
 *
 * @module
 */

import { RingIo } from "./ring_io.ts";
import { DirectIo } from "./direct_io.ts";
import { Errno, errnoName, SystemError } from "../ffi/errno.ts";
import { clearSuidSgid, errno, libc, readSmallFile } from "../ffi/libc.ts";
import { liburing } from "../ffi/liburing.ts";
import { PinnedRegion } from "../ffi/memory.ts";
import { prepMsgRing, prepReadFixed, prepWriteFixed, Ring } from "../ffi/ring.ts";
import {
  FUSE_WRITE_KILL_SUIDGID,
  InHeader,
  Opcode,
  ReadIn,
  UringReqHeader,
  WriteIn,
  WriteOut,
} from "../ops/abi.ts";
import type { BackingIo } from "../ops/backing_io.ts";
import type { BackingFdTable } from "../ops/backing_fds.ts";
import type { Dispatcher } from "../ops/dispatch.ts";
import { SlotExchange } from "./slot_exchange.ts";
import { prepCommit, prepRegister, uringPayloadSize, writeUringReply } from "./uring_commands.ts";
import { BUSY_WAIT_US, coalesced, makeYield, settleHandlers } from "./yield.ts";

/** Completions handled before yielding to the event loop. */
const BATCH_BUDGET = 64;
/** The longest the serving loop runs before yielding to the event loop. */
const YIELD_EVERY_MS = 2;
/**
 * A Worker that waits on its own thread wakes this often when idle (µs),
 * so that its timers and messages still run.
 */
const IDLE_WAKE_US = 100_000;
const TWO_32 = 4294967296;

/** Counters of the io_uring transport. */
export interface UringCounters {
  /** Requests received over the rings. */
  requests: number;
  /** Replies committed. */
  replies: number;
  /** Reads served into an entry's payload slot (READ_FIXED, or pread when direct). */
  fixedReads: number;
  /** Writes served from an entry's payload slot (WRITE_FIXED, or pwrite when direct). */
  fixedWrites: number;
}

/** Per-queue counters in shared memory: one Float64 each, queue-major. */
export const QueueCounter = {
  requests: 0,
  replies: 1,
  fixedReads: 2,
  fixedWrites: 3,
  forwarded: 4,
  COUNT: 5,
} as const;

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

/**
 * The pinned memory of a set of entries: header buffers, payload buffers,
 * and the iovecs that describe them (two per entry for REGISTER, then one
 * per entry for the fixed-buffer table). Held by the session's thread, so
 * that it outlives every thread that uses it.
 */
export class EntryMemory {
  /** `n` header buffers. */
  readonly headers: PinnedRegion;
  /** `n` payload buffers of `slotSize` bytes. */
  readonly payloads: PinnedRegion;
  /** The iovecs. */
  readonly iovecs: PinnedRegion;

  /** Map and describe `n` entries with `slotSize`-byte payloads. */
  constructor(readonly n: number, readonly slotSize: number) {
    this.headers = new PinnedRegion(n * UringReqHeader.SIZE);
    try {
      this.payloads = new PinnedRegion(n * slotSize);
    } catch (e) {
      this.headers.close();
      throw e;
    }
    this.iovecs = new PinnedRegion(n * 48);
    const v = this.iovecs.view;
    for (let i = 0; i < n; i++) {
      const payload = this.payloads.address + BigInt(i * slotSize);
      v.setBigUint64(i * 32, this.headers.address + BigInt(i * UringReqHeader.SIZE), true);
      v.setBigUint64(i * 32 + 8, BigInt(UringReqHeader.SIZE), true);
      v.setBigUint64(i * 32 + 16, payload, true);
      v.setBigUint64(i * 32 + 24, BigInt(slotSize), true);
      v.setBigUint64(n * 32 + i * 16, payload, true);
      v.setBigUint64(n * 32 + i * 16 + 8, BigInt(slotSize), true);
    }
  }

  /** Pinned bytes of headers and payloads. */
  get size(): number {
    return this.headers.size + this.payloads.size;
  }

  /** The addresses, for a thread that adopts this memory. */
  get addresses(): EntryAddresses {
    return {
      n: this.n,
      slotSize: this.slotSize,
      headers: this.headers.address,
      payloads: this.payloads.address,
      iovecs: this.iovecs.address,
    };
  }

  /** Unmap (after every thread that used it has ended). */
  close(): void {
    this.headers.close();
    this.payloads.close();
    this.iovecs.close();
  }
}

/** Where an {@linkcode EntryMemory} lives, as another thread is told. */
export interface EntryAddresses {
  /** Number of entries. */
  n: number;
  /** Payload bytes per entry. */
  slotSize: number;
  /** Address of the header buffers. */
  headers: bigint;
  /** Address of the payload buffers. */
  payloads: bigint;
  /** Address of the iovecs. */
  iovecs: bigint;
}

function viewAt(address: bigint, length: number): ArrayBuffer {
  return Deno.UnsafePointerView.getArrayBuffer(Deno.UnsafePointer.create(address)!, length);
}

/** One ring entry: its header and payload buffers, and the Exchange over them. */
class UringEntry extends SlotExchange {
  /** Entry index: its payload's slot in the fixed-buffer table, and its user_data. */
  readonly id: number;
  readonly qid: number;
  readonly payloadAddress: bigint;
  /** The same address as a pointer, made once (direct preads and pwrites use it). */
  readonly payloadPointer: Deno.PointerValue;
  #t: UringTransport;

  constructor(
    t: UringTransport,
    id: number,
    qid: number,
    headers: DataView,
    payloads: DataView,
    payloadAddress: bigint,
    slotSize: number,
  ) {
    const headerOffset = id * UringReqHeader.SIZE;
    super(
      headers,
      headerOffset,
      headerOffset + UringReqHeader.op_in,
      payloads,
      id * slotSize,
      slotSize,
    );
    this.#t = t;
    this.id = id;
    this.qid = qid;
    this.payloadAddress = payloadAddress;
    this.payloadPointer = Deno.UnsafePointer.create(payloadAddress);
  }

  get io(): BackingIo {
    return this.#t.io;
  }

  reply(_unique: number, error: number, length: number): void {
    // `unique` is still in place from the request (in and out headers share it).
    this.#t.reply(this, error, length);
  }

  protected readInto(fd: number, offset: number, length: number): number | Promise<number> {
    return this.#t.transfer(this, true, fd, offset, length);
  }

  protected writeFrom(fd: number, offset: number, length: number): number | Promise<number> {
    return this.#t.transfer(this, false, fd, offset, length);
  }

  noReply(): void {
    // The kernel sends no-reply requests (FORGET) over /dev/fuse only; if one
    // ever came here, an error commit still hands the entry back.
    this.#t.reply(this, -Errno.EIO, 0);
  }
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
  /** Kernel queues served (queue q takes the requests of CPU q). */
  qids: number[];
  /** Entries per queue. */
  depth: number;
  /** The entries' memory: `qids.length × depth` entries, allocated by the session's thread. */
  memory: EntryAddresses;
  /** The session's handle → fd table. */
  backingFds: BackingFdTable;
  /** Dispatch requests here; without it, hand them over (`handOver`). */
  dispatcher?: Dispatcher;
  /** Where requests go without a dispatcher. */
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
  /** Log the READs and WRITEs served from backing fds (`-d`). */
  debug?: (line: string) => void;
}

/** Serves a set of kernel queues over FUSE-over-io_uring, from the calling thread. */
export class UringTransport {
  /** Entries per queue. */
  readonly depth: number;
  /** Payload bytes per entry. */
  readonly slotSize: number;
  /** Backing calls for the file system: on this transport's ring, or direct. */
  readonly io: BackingIo;
  /** user_data of the MSG_RINGs this ring takes: commit entry `res`, stop, fault. */
  readonly commitUserData: number;
  readonly stopUserData: number;
  readonly faultUserData: number;
  #o: UringTransportOptions;
  #ring: Ring;
  #entries: UringEntry[] = [];
  #counters: Float64Array;
  #live = 0;
  #stopped = false;
  /** Requests dispatched on this thread and not yet answered. */
  #pending = 0;
  #flush = coalesced(() => this.#pump(BATCH_BUDGET));
  /** Bumped whenever an SQE is prepared: the loop's sign that handlers moved. */
  #prepared = 0;
  #direct: boolean;
  #failures: number[] | null = null;
  #done!: () => void;
  #finished = new Promise<void>((r) => this.#done = r);

  /**
   * Set up the ring and register the payload buffers as fixed buffers.
   * Throws if any step fails (the caller falls back).
   */
  constructor(options: UringTransportOptions) {
    this.#o = options;
    this.depth = options.depth;
    const m = options.memory;
    this.slotSize = m.slotSize;
    const n = m.n;
    if (n !== options.qids.length * options.depth) throw new RangeError("entry memory size");
    this.#counters = options.counters;
    const entries = 1 << Math.ceil(Math.log2(Math.max(64, n * 4)));
    this.#ring = new Ring({ entries, cqEntries: entries * 2 });
    this.#direct = options.backingIo === "direct";
    this.io = this.#direct ? new DirectIo() : new RingIo(this.#ring, () => this.#flushSoon());
    try {
      const headers = new DataView(viewAt(m.headers, n * UringReqHeader.SIZE));
      const payloads = new DataView(viewAt(m.payloads, n * m.slotSize));
      for (let id = 0; id < n; id++) {
        const qid = options.qids[Math.floor(id / this.depth)];
        const address = m.payloads + BigInt(id * m.slotSize);
        const entry = new UringEntry(this, id, qid, headers, payloads, address, m.slotSize);
        this.#entries.push(entry);
        // Entry ids are 0..n-1 (user_data = fixed-buffer index); the rest follow.
        if (this.#ring.register((res) => this.#arrived(entry, res)) !== id) {
          throw new Error("ring ids out of step with entry ids");
        }
      }
      this.commitUserData = this.#ring.register((res) => this.#commit(this.#entries[res]));
      this.stopUserData = this.#ring.register(() => this.#stopped = true);
      this.faultUserData = this.#ring.register(() => {
        throw new Error("fault injected into a queue thread");
      });
      this.#ring.registerSparseBuffers(n);
      this.#ring.updateBuffers(0, Deno.UnsafePointer.create(m.iovecs + BigInt(n * 32))!, n);
    } catch (e) {
      this.#ring.close().catch(() => {});
      throw e;
    }
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
    const iovecs = this.#o.memory.iovecs;
    for (const entry of this.#entries) {
      const at = prepRegister(
        this.#ring,
        this.#o.fuseFd,
        iovecs + BigInt(entry.id * 32),
        entry.qid,
      );
      this.#ring.track(at, entry.id);
      this.#live++;
    }
    this.#ring.submit();
    const failures: number[] = [];
    this.#failures = failures;
    this.#ring.reap();
    this.#failures = null;
    if (failures.length === 0) return null;
    const names = [...new Set(failures.map(errnoName))].join(", ");
    return `REGISTER failed for ${failures.length} of ${this.#entries.length} entries: ${names}`;
  }

  /** Serve until every entry has been ended by the kernel (unmount), or stopped. */
  async run(): Promise<void> {
    const [yieldNow, closeYield] = makeYield();
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
      } else if (onThread) {
        // Nothing else runs on a queue thread: wait right here. With a
        // handler still pending (waiting on something other than the ring),
        // wake soon and let the event loop run.
        const waited = this.#ring.waitHere(this.#pending > 0 ? BUSY_WAIT_US : IDLE_WAKE_US);
        if (!waited) {
          await yieldNow();
          lastYield = performance.now();
        }
      } else if (busy && this.#ring.waitHere(BUSY_WAIT_US)) {
        continue; // the next request came while we waited in the kernel
      } else {
        busy = false;
        await this.#ring.wait(); // idle: wait on Deno's pool, loop free
      }
    }
    closeYield();
    this.#done();
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

  /** Release the ring (after {@linkcode run}; pending commands are cancelled with it). */
  close(): Promise<void> {
    return this.#ring.close();
  }

  #count(entry: UringEntry, counter: number): void {
    this.#counters[entry.qid * QueueCounter.COUNT + counter]++;
  }

  /** A REGISTER or COMMIT_AND_FETCH completed: a request arrived, or the entry ended. */
  #arrived(entry: UringEntry, res: number): void {
    if (res < 0) {
      this.#live--;
      if (this.#failures) this.#failures.push(-res);
      else if (res !== -Errno.ENOTCONN && res !== -Errno.ENODEV && res !== -Errno.ECANCELED) {
        console.error(new SystemError("fuse uring entry", -res, `queue ${entry.qid}`).message);
      }
      return;
    }
    this.#count(entry, QueueCounter.requests);
    const h = entry.header;
    const o = entry.headerOffset;
    const opcode = h.getUint32(o + InHeader.opcode, true);
    if ((opcode === Opcode.READ || opcode === Opcode.WRITE) && this.#fromBackingFd(entry, opcode)) {
      return;
    }
    const dispatcher = this.#o.dispatcher;
    if (dispatcher) {
      this.#pending++;
      entry.argLength = Math.min(dispatcher.argSize(opcode), UringReqHeader.op_in);
      entry.dataLength = uringPayloadSize(h, o);
      dispatcher.dispatch(entry);
      return;
    }
    // The FileSystem lives on another thread: hand the request over.
    const to = this.#o.handOver!;
    this.#count(entry, QueueCounter.forwarded);
    prepMsgRing(this.#ring.sqes, this.#ring.sqe(), to.ringFd, to.base + entry.id, to.userData);
  }

  /**
   * Serve READ or WRITE here if the handle is backed by an fd; false if it
   * is not (the request then goes the usual way).
   */
  #fromBackingFd(entry: UringEntry, opcode: number): boolean {
    const h = entry.header;
    const arg = entry.argOffset;
    // fuse_read_in and fuse_write_in share fh, offset and size.
    const fd = this.#o.backingFds.fdAt(h, arg + ReadIn.fh);
    if (fd < 0) return false;
    this.#pending++;
    const read = opcode === Opcode.READ;
    const offset = h.getUint32(arg + ReadIn.offset, true) +
      h.getUint32(arg + ReadIn.offset + 4, true) * TWO_32;
    const size = h.getUint32(arg + ReadIn.size, true);
    this.#o.debug?.(
      `unique: ${h.getUint32(entry.headerOffset + InHeader.unique, true)}, opcode: ` +
        `${read ? "READ" : "WRITE"} (${opcode}), nodeid: ` +
        `${h.getUint32(entry.headerOffset + InHeader.nodeid, true)}, size: ${size}, ` +
        `on queue ${entry.qid}, backing fd ${fd}`,
    );
    if (!read && size > uringPayloadSize(h, entry.headerOffset)) {
      this.reply(entry, -Errno.EINVAL, 0);
      return true;
    }
    let n: number | Promise<number>;
    try {
      if (!read && (h.getUint32(arg + WriteIn.write_flags, true) & FUSE_WRITE_KILL_SUIDGID)) {
        // As the write of a caller without CAP_FSETID would.
        clearSuidSgid(fd, h.getUint32(entry.headerOffset + InHeader.gid, true));
      }
      n = this.transfer(entry, read, fd, offset, read ? Math.min(size, this.slotSize) : size);
    } catch (e) {
      this.reply(entry, -(e as SystemError).errno, 0);
      return true;
    }
    if (typeof n === "number") this.#moved(entry, read, n);
    else {n.then((n) =>
        this.#moved(entry, read, n), (e: SystemError) =>
        this.#moved(entry, read, -e.errno));}
    return true;
  }

  /** A read or write served from a backing fd is done: reply with it (or its errno). */
  #moved(entry: UringEntry, read: boolean, res: number): void {
    if (res < 0) return this.reply(entry, res, 0);
    if (read) return this.reply(entry, 0, res);
    // The reply's payload is a fuse_write_out at the start of the slot.
    entry.out.setUint32(entry.outOffset + WriteOut.size, res, true);
    entry.out.setUint32(entry.outOffset + 4, 0, true);
    this.reply(entry, 0, WriteOut.SIZE);
  }

  /** Write the reply's header and commit `entry` (COMMIT_AND_FETCH). */
  reply(entry: UringEntry, error: number, length: number): void {
    this.#pending--;
    writeUringReply(entry.header, entry.headerOffset, error, length);
    this.#commit(entry);
  }

  /** Commit `entry`, whose reply is already in its buffers. */
  #commit(entry: UringEntry): void {
    const at = prepCommit(this.#ring, this.#o.fuseFd, entry.header, entry.headerOffset, entry.qid);
    this.#ring.track(at, entry.id);
    this.#count(entry, QueueCounter.replies);
    this.#flushSoon();
  }

  /**
   * Move `length` bytes between `fd` and the entry's payload (request data
   * and reply data both start it): READ_FIXED / WRITE_FIXED on the ring, or
   * pread / pwrite on this thread; the bytes moved. A direct call that fails
   * throws a SystemError, a ring operation rejects with one. The read is not
   * linked to the commit because the commit must carry the byte count.
   */
  transfer(
    entry: UringEntry,
    read: boolean,
    fd: number,
    offset: number,
    length: number,
  ): number | Promise<number> {
    this.#count(entry, read ? QueueCounter.fixedReads : QueueCounter.fixedWrites);
    if (this.#direct) {
      const n = (read ? libc.pread64 : libc.pwrite64)(
        fd,
        entry.payloadPointer,
        BigInt(length),
        BigInt(offset),
      );
      if (n < 0) throw new SystemError(read ? "pread" : "pwrite", errno(), `fd ${fd}`);
      return n;
    }
    const prep = read ? prepReadFixed : prepWriteFixed;
    const p = this.#ring.submitOp(
      read ? "read_fixed" : "write_fixed",
      (at) => prep(this.#ring.sqes, at, fd, entry.payloadAddress, length, offset, entry.id),
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
