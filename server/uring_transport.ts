/**
 * FUSE-over-io_uring (Linux 6.14+): requests arrive as completions of
 * REGISTER / COMMIT_AND_FETCH uring commands on the `/dev/fuse` fd, and each
 * reply is committed with the command that fetches the next request.
 *
 * Every kernel queue (one per possible CPU) gets `depth` ring entries. An
 * entry owns a 288-byte header buffer and a payload buffer of `slotSize`
 * bytes, both pinned; the payload buffers sit in the ring's sparse
 * fixed-buffer table at index = entry id, so read data goes from the backing
 * fd into the reply with READ_FIXED, and write data from the request to the
 * backing fd with WRITE_FIXED, never through JavaScript. With direct backing
 * calls (`backingIo: "direct"`) the same slots are read into and written
 * from by `pread`/`pwrite` on the serving thread instead.
 *
 * @module
 */

import { RingIo } from "./ring_io.ts";
import { DirectIo } from "./direct_io.ts";
import { Errno, errnoName, SystemError } from "../ffi/errno.ts";
import { clearSuidSgid, preadPinned, pwritePinned, readSmallFile } from "../ffi/libc.ts";
import { liburing } from "../ffi/liburing.ts";
import { PinnedRegion } from "../ffi/memory.ts";
import { prepReadFixed, prepWriteFixed, Ring } from "../ffi/ring.ts";
import { InHeader, OutHeader, UringReqHeader } from "../ops/abi.ts";
import { prepCommit, prepRegister, uringPayloadSize, writeUringReply } from "./uring_commands.ts";
import { setU64 } from "../ops/codec.ts";
import type { BackingIo } from "../ops/backing_io.ts";
import type { Dispatcher } from "../ops/dispatch.ts";
import type { Exchange } from "../ops/exchange.ts";
import { BUSY_WAIT_US, coalesced, makeYield, settleHandlers } from "./yield.ts";

/** Completions handled before yielding to the event loop. */
const BATCH_BUDGET = 64;
/** The longest the serving loop runs before yielding to the event loop. */
const YIELD_EVERY_MS = 2;

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

/** One ring entry: its header and payload buffers, and the Exchange over them. */
class UringEntry implements Exchange {
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
  /** Entry id: index of its payload in the fixed-buffer table, and its user_data. */
  readonly id: number;
  readonly qid: number;
  readonly payloadAddress: bigint;
  /** The same address as a pointer, made once (direct preads and pwrites use it). */
  readonly payloadPointer: Deno.PointerValue;
  /** The user_data of this entry's backing reads (READ_FIXED). */
  readId = -1;
  /** The unique of the request whose data is being read. */
  readUnique = 0;
  #t: UringTransport;

  constructor(
    t: UringTransport,
    id: number,
    qid: number,
    headers: PinnedRegion,
    payloads: PinnedRegion,
    slotSize: number,
  ) {
    this.#t = t;
    this.id = id;
    this.qid = qid;
    this.header = this.arg = headers.view;
    this.headerOffset = id * UringReqHeader.SIZE;
    this.argOffset = this.headerOffset + UringReqHeader.op_in;
    this.data = this.outBytes = payloads.bytes;
    this.out = payloads.view;
    this.dataOffset = this.outOffset = id * slotSize;
    this.outCapacity = slotSize;
    this.payloadAddress = payloads.address + BigInt(id * slotSize);
    this.payloadPointer = Deno.UnsafePointer.create(this.payloadAddress);
  }

  get io(): BackingIo {
    return this.#t.io;
  }

  reply(unique: number, error: number, length: number): void {
    this.#t.commit(this, unique, error, length);
  }

  replyFromFd(unique: number, fd: number, offset: number, length: number): void {
    this.#t.readFixed(this, unique, fd, offset, length);
  }

  writeDataToFd(fd: number, offset: number, killSuidgid: boolean): number | Promise<number> {
    if (killSuidgid) {
      clearSuidSgid(fd, this.header.getUint32(this.headerOffset + InHeader.gid, true));
    }
    return this.#t.writeFixed(this, fd, offset);
  }

  noReply(): void {
    // The kernel sends no-reply requests (FORGET) over /dev/fuse only; if one
    // ever came here, an error commit still hands the entry back.
    this.#t.commit(this, 0, -Errno.EIO, 0);
  }
}

/** Options of the io_uring transport. */
export interface UringTransportOptions {
  /** Entries per queue (default 8). */
  queueDepth?: number;
  /** Payload bytes per entry: max(8192, max_write, max_pages × 4096). */
  slotSize: number;
  /** Number of kernel queues (default: possible CPUs). */
  queues?: number;
  /**
   * How backing calls and file data are done: "ring" (default) as
   * operations on this transport's ring, "direct" as system calls on the
   * serving thread (for sources where no call can block, such as tmpfs,
   * where io_uring would hand most of them to a worker thread and back).
   */
  backingIo?: "ring" | "direct";
}

/** Serves a session's requests over FUSE-over-io_uring. */
export class UringTransport {
  /** Counters since start. */
  readonly counters: UringCounters = { requests: 0, replies: 0, fixedReads: 0, fixedWrites: 0 };
  /** Number of kernel queues served. */
  readonly queues: number;
  /** Entries per queue. */
  readonly depth: number;
  /** Payload bytes per entry. */
  readonly slotSize: number;
  /** Backing calls for the file system: on this transport's ring, or direct. */
  readonly io: BackingIo;
  #fd: number;
  #dispatcher: Dispatcher;
  #ring: Ring;
  #headers: PinnedRegion;
  #payloads: PinnedRegion;
  #iovecs: PinnedRegion;
  #entries: UringEntry[] = [];
  #live = 0;
  #flush = coalesced(() => this.#pump(BATCH_BUDGET));
  /** Bumped whenever an SQE is prepared: the loop's sign that handlers moved. */
  #prepared = 0;
  #direct: boolean;
  #failures: number[] | null = null;
  #done!: () => void;
  #finished = new Promise<void>((r) => this.#done = r);

  /**
   * Set up the ring and pinned buffers, and register the payload buffers as
   * fixed buffers. Throws if any step fails (the caller falls back).
   */
  constructor(fd: number, dispatcher: Dispatcher, options: UringTransportOptions) {
    this.#fd = fd;
    this.#dispatcher = dispatcher;
    this.queues = options.queues ?? possibleCpus();
    this.depth = options.queueDepth ?? 8;
    this.slotSize = Math.max(8192, options.slotSize);
    const n = this.queues * this.depth;
    const entries = 1 << Math.ceil(Math.log2(Math.max(64, n * 4)));
    this.#ring = new Ring({ entries, cqEntries: entries * 2 });
    this.#direct = options.backingIo === "direct";
    this.io = this.#direct ? new DirectIo() : new RingIo(this.#ring, () => this.#flushSoon());
    try {
      this.#headers = new PinnedRegion(n * UringReqHeader.SIZE);
      this.#payloads = new PinnedRegion(n * this.slotSize);
      // Two iovecs per entry for REGISTER (header, payload), then one per
      // entry for the fixed-buffer table.
      this.#iovecs = new PinnedRegion(n * 48);
      const iov = this.#iovecs.view;
      for (let id = 0; id < n; id++) {
        const entry = new UringEntry(
          this,
          id,
          Math.floor(id / this.depth),
          this.#headers,
          this.#payloads,
          this.slotSize,
        );
        this.#entries.push(entry);
        const o = id * 32;
        iov.setBigUint64(o, this.#headers.address + BigInt(entry.headerOffset), true);
        iov.setBigUint64(o + 8, BigInt(UringReqHeader.SIZE), true);
        iov.setBigUint64(o + 16, entry.payloadAddress, true);
        iov.setBigUint64(o + 24, BigInt(this.slotSize), true);
        iov.setBigUint64(n * 32 + id * 16, entry.payloadAddress, true);
        iov.setBigUint64(n * 32 + id * 16 + 8, BigInt(this.slotSize), true);
        const ud = this.#ring.register((res) => this.#complete(entry, res));
        if (ud !== id) throw new Error("ring ids out of step with entry ids");
      }
      // Entry ids are 0..n-1 (user_data = fixed-buffer index); read ids follow.
      for (const entry of this.#entries) {
        entry.readId = this.#ring.register((res) =>
          this.commit(entry, entry.readUnique, res < 0 ? res : 0, res < 0 ? 0 : res)
        );
      }
      this.#ring.registerSparseBuffers(n);
      this.#ring.updateBuffers(0, this.#iovecs.at(n * 32), n);
    } catch (e) {
      this.close().catch(() => {});
      throw e;
    }
  }

  /** Bytes of pinned memory held: headers and payloads of every entry. */
  get memory(): number {
    return this.#headers.size + this.#payloads.size;
  }

  /**
   * Register every entry with the kernel. Returns null when they are all in
   * place, or why the kernel refused some (a refused REGISTER completes
   * during submit; accepted ones stay pending until a request arrives).
   */
  register(): string | null {
    for (const entry of this.#entries) {
      const iovecs = this.#iovecs.address + BigInt(entry.id * 32);
      this.#ring.track(prepRegister(this.#ring, this.#fd, iovecs, entry.qid), entry.id);
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

  /** Serve until every entry has been ended by the kernel (unmount). */
  async run(): Promise<void> {
    const [yieldNow, closeYield] = makeYield();
    let busy = false;
    let lastYield = performance.now();
    while (this.#live > 0) {
      const n = this.#pump(BATCH_BUDGET);
      if (this.#live === 0) break;
      if (n > 0) {
        busy = true;
        // Let timers, signals and pending promise work run regularly.
        if (n >= BATCH_BUDGET || performance.now() - lastYield > YIELD_EVERY_MS) {
          await yieldNow();
          lastYield = performance.now();
        } else {
          await null; // microtasks only: async replies get committed
        }
      } else if (
        this.counters.requests !== this.counters.replies &&
        await settleHandlers(() => this.#prepared)
      ) {
        continue; // a handler reached the ring after a few microtask turns
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

  /** Settles when {@linkcode run} has seen every entry end. */
  get finished(): Promise<void> {
    return this.#finished;
  }

  /**
   * Release the ring and memory (after the entries have ended). Also undoes
   * a constructor that failed halfway, hence the optional regions.
   */
  async close(): Promise<void> {
    await this.#ring.close();
    this.#headers?.close();
    this.#payloads?.close();
    this.#iovecs?.close();
  }

  /** A REGISTER or COMMIT_AND_FETCH completed: a request arrived, or the entry ended. */
  #complete(entry: UringEntry, res: number): void {
    if (res < 0) {
      this.#live--;
      if (this.#failures) this.#failures.push(-res);
      else if (res !== -Errno.ENOTCONN && res !== -Errno.ENODEV && res !== -Errno.ECANCELED) {
        console.error(new SystemError("fuse uring entry", -res, `queue ${entry.qid}`).message);
      }
      return;
    }
    this.counters.requests++;
    const h = entry.header;
    const o = entry.headerOffset;
    const opcode = h.getUint32(o + InHeader.opcode, true);
    entry.argLength = Math.min(this.#dispatcher.argSize(opcode), UringReqHeader.op_in);
    entry.dataLength = uringPayloadSize(h, o);
    this.#dispatcher.dispatch(entry);
  }

  /** Write the out header and queue COMMIT_AND_FETCH for `entry`. */
  commit(entry: UringEntry, unique: number, error: number, length: number): void {
    const h = entry.header;
    const o = entry.headerOffset;
    setU64(h, o + OutHeader.unique, unique);
    writeUringReply(h, o, error, length);
    this.#ring.track(prepCommit(this.#ring, this.#fd, h, o, entry.qid), entry.id);
    this.counters.replies++;
    this.#flushSoon();
  }

  /**
   * READ_FIXED from `fd` into the entry's payload; its completion commits
   * what was read (a short read at EOF commits fewer bytes, an error its
   * errno). The read is not linked to the commit because the commit must
   * carry the byte count, known only when the read completes.
   */
  readFixed(entry: UringEntry, unique: number, fd: number, offset: number, length: number): void {
    this.counters.fixedReads++;
    if (this.#direct) {
      // A failed pread throws: the dispatcher answers with its errno.
      this.commit(entry, unique, 0, preadPinned(fd, entry.payloadPointer, length, offset));
      return;
    }
    entry.readUnique = unique;
    const at = this.#ring.sqe();
    prepReadFixed(this.#ring.sqes, at, fd, entry.payloadAddress, length, offset, entry.id);
    this.#ring.track(at, entry.readId);
    this.#flushSoon();
  }

  /** WRITE_FIXED the entry's request data to `fd`; resolves with the bytes written. */
  writeFixed(entry: UringEntry, fd: number, offset: number): number | Promise<number> {
    this.counters.fixedWrites++;
    // Write data sits at the start of the payload (dataOffset === outOffset).
    if (this.#direct) return pwritePinned(fd, entry.payloadPointer, entry.dataLength, offset);
    const addr = entry.payloadAddress;
    const p = this.#ring.submitOp(
      "write_fixed",
      (at) => prepWriteFixed(this.#ring.sqes, at, fd, addr, entry.dataLength, offset, entry.id),
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
