/**
 * FUSE-over-io_uring (Linux 6.14+): requests arrive as completions of
 * REGISTER / COMMIT_AND_FETCH uring commands on the `/dev/fuse` fd, and each
 * reply is committed with the command that fetches the next request.
 *
 * A {@linkcode UringTransport} serves a set of kernel queues (one queue per
 * CPU) from the thread that made it, on a ring of its own: all of them on
 * the session's thread with `threads: 1`, or one queue per Worker (see
 * `queue_thread.ts`). Each queue gets `depth` ring entries. Where a
 * request's payload lives depends on the mode ({@linkcode UringMode}):
 *
 * - `mainline`: each entry owns a 288-byte header buffer and a payload
 *   buffer of `slotSize` bytes, both pinned, and the payload buffers sit in
 *   the ring's sparse fixed-buffer table at index = entry, so read data
 *   goes from a backing fd into the reply with READ_FIXED and write data
 *   from the request to the backing fd with WRITE_FIXED, never through
 *   JavaScript (with direct backing calls, `pread`/`pwrite` on this thread).
 * - `buf_ring` (kernels with the FUSE buffer-ring series): the headers are
 *   one fixed buffer at index 0, and the kernel puts each payload in a
 *   buffer of a kernel-managed buffer ring (group 0) that it picks, names in
 *   the completion, and takes back itself; file data moves between a
 *   backing fd and that buffer (READ/WRITE on the ring, or pread/pwrite).
 *   The series needs one ring per queue, so a transport serves one queue.
 * - `zero_copy`: as `buf_ring`, but the kernel also installs the client's
 *   own pages of a READ or WRITE (and READDIR, READLINK) in fixed-buffer
 *   slot = entry, headers moving to index `depth`: READ and WRITE of a
 *   backing fd are READ_FIXED / WRITE_FIXED on that slot, and the server
 *   never touches those pages. Data a FileSystem makes itself goes through
 *   the entry's staging slot, a memfd page, and READ_FIXED / WRITE_FIXED
 *   between that memfd and the pages.
 *
 * What happens to a request:
 * - READ and WRITE of a handle backed by an fd (`OpenReply.backingFd`) are
 *   served here, whatever else this thread does;
 * - with a dispatcher (a FileSystem on this thread), everything else is
 *   dispatched here;
 * - without one (a queue Worker of a FileSystem that lives on the session's
 *   thread), it is handed over with MSG_RING: that thread writes the reply
 *   into the entry and answers with a MSG_RING on this ring, which commits.
 *   In the buffer-ring modes the request is first copied into the entry's
 *   own slot and the reply copied back from it, so the other thread sees
 *   the same memory in every mode.
 *
 * @module
 */

import { pinnedRead, pinnedWrite, RingIo } from "../io/ring_io.ts";
import { DirectIo } from "../io/direct_io.ts";
import { Errno, errnoName, SystemError } from "../../ffi/errno.ts";
import { clearSuidSgid, readSmallFile } from "../../ffi/libc.ts";
import { KernelBufferRing } from "../../ffi/kernel_buffer_ring.ts";
import { liburing } from "../../ffi/liburing.ts";
import { alignUp, PAGE_SIZE, PinnedRegion } from "../../ffi/memory.ts";
import { prepMsgRing, prepReadFixed, prepWriteFixed, Ring } from "../../ffi/ring.ts";
import { IORING_CQE_BUFFER_SHIFT, IORING_CQE_F_BUFFER } from "../../ffi/uring_abi.ts";
import {
  FUSE_URING_BUF_RING,
  FUSE_URING_RINGBUF_GROUP,
  FUSE_URING_ZERO_COPY,
  FUSE_WRITE_KILL_SUIDGID,
  InHeader,
  NotifyRetrieveIn,
  Opcode,
  OutHeader,
  ReadIn,
  UringReqHeader,
  WriteIn,
  WriteOut,
} from "../../ops/abi.ts";
import type { BackingIo } from "../../ops/backing_io.ts";
import type { BackingFdTable } from "../../ops/backing_fds.ts";
import type { Dispatcher } from "../../ops/dispatch.ts";
import { SlotExchange } from "../io/slot_exchange.ts";
import { type EntryAddresses, viewAt } from "./entry_memory.ts";
import {
  prepCommit,
  prepRegister,
  prepRegisterBufRing,
  uringPayloadSize,
  writeUringReply,
} from "./commands.ts";
import { BUSY_WAIT_US, coalesced, makeYield, settleHandlers } from "../io/yield.ts";

/** Completions handled before yielding to the event loop. */
const BATCH_BUDGET = 64;
/** The longest the serving loop runs before yielding to the event loop. */
const YIELD_EVERY_MS = 2;
const TWO_32 = 4294967296;

/** Counters of the io_uring transport. */
export interface UringCounters {
  /** Requests received over the rings. */
  requests: number;
  /** Replies committed. */
  replies: number;
  /**
   * Reads from a backing fd into a request's payload memory (READ_FIXED on
   * the entry's slot; in the buffer-ring modes, READ into the kernel's
   * buffer; pread when direct).
   */
  fixedReads: number;
  /** Writes to a backing fd from a request's payload memory (as {@linkcode fixedReads}). */
  fixedWrites: number;
  /** Completions that handed an entry a new kernel-managed buffer (buffer-ring modes). */
  bufferSelects: number;
  /**
   * Requests with a payload whose completion named no buffer: the kernel
   * had the next request queued at the commit and reused the entry's buffer.
   */
  bufferKept: number;
  /** Reads from a backing fd straight into the client's pages (READ_FIXED, zero-copy). */
  zeroCopyReads: number;
  /** Writes to a backing fd straight from the client's pages (WRITE_FIXED, zero-copy). */
  zeroCopyWrites: number;
  /** Zero-copy requests whose data went through the entry's staging slot instead. */
  staged: number;
}

/** Per-queue counters in shared memory: one Float64 each, queue-major. */
export const QueueCounter = {
  requests: 0,
  replies: 1,
  fixedReads: 2,
  fixedWrites: 3,
  forwarded: 4,
  bufferSelects: 5,
  zeroCopyReads: 6,
  zeroCopyWrites: 7,
  staged: 8,
  bufferKept: 9,
  COUNT: 10,
} as const;

/**
 * How a queue's requests reach the server: `mainline` (an iovec pair per
 * entry, Linux 6.14+), or, on kernels with the FUSE buffer-ring series,
 * `buf_ring` (payloads in a kernel-managed buffer ring) and `zero_copy`
 * (and READ/WRITE data in the client's own pages, as fixed buffers).
 */
export type UringMode = "mainline" | "buf_ring" | "zero_copy";

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
 * Set where an io_uring request's argument and data are, from what the
 * kernel wrote: the argument is what `argSize` says the opcode needs, in
 * the op_in area, and the data is `payload_sz` bytes of payload. NOTIFY_REPLY
 * is the exception: the kernel sends its first argument empty, so its
 * `fuse_notify_retrieve_in` leads the payload. Returns 0, or EINVAL when
 * `payload_sz` claims more than the `capacity` bytes of payload memory.
 */
export function fitUringRequest(
  ex: SlotExchange,
  opcode: number,
  argSize: number,
  capacity: number,
): number {
  const size = uringPayloadSize(ex.header, ex.headerOffset);
  ex.arg = ex.header;
  ex.argOffset = ex.headerOffset + UringReqHeader.op_in;
  ex.argLength = Math.min(argSize, UringReqHeader.ring_ent_in_out - UringReqHeader.op_in);
  ex.dataLength = size > capacity ? 0 : size;
  if (size > capacity) return Errno.EINVAL;
  if (opcode === Opcode.NOTIFY_REPLY) {
    const d = ex.data;
    ex.arg = new DataView(d.buffer, d.byteOffset, d.byteLength);
    ex.argOffset = ex.dataOffset;
    ex.argLength = Math.min(argSize, size);
    ex.dataOffset += ex.argLength;
    ex.dataLength -= ex.argLength;
  }
  return 0;
}

/** Opcodes whose reply data the kernel passes as the client's pages. */
const PAGES_OUT = new Set<number>([
  Opcode.READ,
  Opcode.READDIR,
  Opcode.READDIRPLUS,
  Opcode.READLINK,
]);

/** One ring entry: its header, its payload memory, and the Exchange over them. */
class UringEntry extends SlotExchange {
  /** Entry index: its user_data, and its slot in the fixed-buffer table. */
  readonly id: number;
  readonly qid: number;
  /** Its own payload slot (mainline: the kernel's payload buffer; else staging). */
  readonly ownAddress: bigint;
  readonly ownOffset: number;
  /** The kernel-managed buffer this entry holds, -1 for none (buffer-ring modes). */
  bufferId = -1;
  /**
   * Zero-copy: this request's data is the client's pages in fixed slot
   * `id`, going `in` (WRITE) or `out` (READ, READDIR, READLINK); else null.
   */
  pages: "in" | "out" | null = null;
  /** The pages hold the reply already (READ_FIXED from a backing fd). */
  replyInPages = false;
  /** The pages' write data has been staged in the entry's own slot. */
  dataStaged = false;
  /** Where the request's data is and where the reply's payload goes, as addresses. */
  dataAddress: bigint;
  outAddress: bigint;
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
    this.ownOffset = id * slotSize;
    this.ownAddress = this.dataAddress = this.outAddress = payloadAddress;
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
  /** Kernel queues served (queue q takes the requests of CPU q); one in the buffer-ring modes. */
  qids: number[];
  /** Entries per queue. */
  depth: number;
  /** How requests reach this transport (default `mainline`). */
  mode?: UringMode;
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
  #entries: UringEntry[] = [];
  /** The entries' own payload slots. */
  #own!: DataView<ArrayBuffer>;
  #ownBytes!: Uint8Array<ArrayBuffer>;
  #counters: Float64Array;
  /** The kernel-managed buffers (buffer-ring modes). */
  #buffers: KernelBufferRing | null = null;
  /** iovecs handed to the kernel at setup and REGISTER (mainline), kept while it may read them. */
  #iovecs: PinnedRegion | null = null;
  #live = 0;
  #stopped = false;
  /** Requests dispatched on this thread and not yet answered. */
  #pending = 0;
  #flush = coalesced(() => this.#pump(BATCH_BUDGET), (e) => {
    this.#failure ??= e;
    this.#stopped = true;
  });
  /** Why serving cannot go on (the ring failed outside the loop). */
  #failure: unknown = null;
  /** Bumped whenever an SQE is prepared: the loop's sign that handlers moved. */
  #prepared = 0;
  #direct: boolean;
  #failures: number[] | null = null;
  #done!: () => void;
  #finished = new Promise<void>((r) => this.#done = r);

  /**
   * Set up the ring and what the mode registers in it: the payload slots as
   * fixed buffers (mainline), or the header buffer and the kernel-managed
   * buffer ring (buffer-ring modes). Throws if any step fails (the caller
   * falls back).
   */
  constructor(options: UringTransportOptions) {
    this.#o = options;
    this.depth = options.depth;
    this.mode = options.mode ?? "mainline";
    const m = options.memory;
    this.slotSize = m.slotSize;
    const n = m.n;
    if (n !== options.qids.length * options.depth) throw new RangeError("entry memory size");
    if (this.mode !== "mainline" && options.qids.length !== 1) {
      throw new RangeError(`${this.mode} needs a ring per queue`);
    }
    if (this.mode === "zero_copy" && m.payloadsFd < 0) {
      throw new RangeError("zero_copy needs its staging slots in a memfd");
    }
    this.#counters = options.counters;
    const entries = 1 << Math.ceil(Math.log2(Math.max(64, n * 4)));
    this.#ring = new Ring({ entries, cqEntries: entries * 2 });
    this.#direct = options.backingIo === "direct";
    this.#ringIo = this.#direct ? null : new RingIo(this.#ring, () => this.#flushSoon());
    this.io = this.#ringIo ?? new DirectIo();
    try {
      const headers = new DataView(viewAt(m.headers, n * UringReqHeader.SIZE));
      const payloads = this.#own = new DataView(viewAt(m.payloads, n * m.slotSize));
      this.#ownBytes = new Uint8Array(payloads.buffer);
      for (let id = 0; id < n; id++) {
        const qid = options.qids[Math.floor(id / this.depth)];
        const address = m.payloads + BigInt(id * m.slotSize);
        const entry = new UringEntry(this, id, qid, headers, payloads, address, m.slotSize);
        this.#entries.push(entry);
        // Entry ids are 0..n-1 (user_data = fixed-buffer index); the rest follow.
        if (this.#ring.register((res, flags) => this.#arrived(entry, res, flags)) !== id) {
          throw new Error("ring ids out of step with entry ids");
        }
      }
      this.commitUserData = this.#ring.register((res) => this.#committed(this.#entries[res]));
      this.stopUserData = this.#ring.register(() => this.#stopped = true);
      this.faultUserData = this.#ring.register(() => {
        throw new Error("fault injected into a queue thread");
      });
      if (this.mode === "mainline") this.#registerSlots();
      else this.#registerBufferRing();
    } catch (e) {
      this.#release();
      throw e;
    }
  }

  /** Mainline: iovec pairs for REGISTER, and the payload slots as fixed buffers 0..n-1. */
  #registerSlots(): void {
    const m = this.#o.memory;
    const n = m.n;
    const v = (this.#iovecs = new PinnedRegion(n * 48)).view;
    for (let i = 0; i < n; i++) {
      const payload = m.payloads + BigInt(i * m.slotSize);
      v.setBigUint64(i * 32, m.headers + BigInt(i * UringReqHeader.SIZE), true);
      v.setBigUint64(i * 32 + 8, BigInt(UringReqHeader.SIZE), true);
      v.setBigUint64(i * 32 + 16, payload, true);
      v.setBigUint64(i * 32 + 24, BigInt(m.slotSize), true);
      v.setBigUint64(n * 32 + i * 16, payload, true);
      v.setBigUint64(n * 32 + i * 16 + 8, BigInt(m.slotSize), true);
    }
    this.#ring.registerSparseBuffers(n);
    this.#ring.updateBuffers(0, this.#iovecs.at(n * 32), n);
  }

  /**
   * Buffer-ring modes: the headers as one fixed buffer (index 0, or
   * `depth` with zero-copy, whose first `depth` slots take client pages),
   * and the kernel-managed buffer ring of group 0 that payloads come in.
   */
  #registerBufferRing(): void {
    const m = this.#o.memory;
    const zeroCopy = this.mode === "zero_copy";
    const iov = (this.#iovecs = new PinnedRegion(16)).view;
    iov.setBigUint64(0, m.headers, true);
    iov.setBigUint64(8, BigInt(m.n * UringReqHeader.SIZE), true);
    this.#ring.registerSparseBuffers(zeroCopy ? this.depth + 1 : 1);
    this.#ring.updateBuffers(zeroCopy ? this.depth : 0, this.#iovecs.pointer, 1);
    // One buffer per entry at most is held at a time; the ring's size is a power of two.
    const count = 1 << Math.ceil(Math.log2(this.depth));
    this.#buffers = new KernelBufferRing(
      this.#ring,
      alignUp(this.slotSize, PAGE_SIZE),
      count,
      FUSE_URING_RINGBUF_GROUP,
    );
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
    const flags = this.mode === "zero_copy"
      ? FUSE_URING_BUF_RING | FUSE_URING_ZERO_COPY
      : this.mode === "buf_ring"
      ? FUSE_URING_BUF_RING
      : 0;
    for (const entry of this.#entries) {
      const at = flags === 0
        ? prepRegister(
          this.#ring,
          this.#o.fuseFd,
          this.#iovecs!.address + BigInt(entry.id * 32),
          entry.qid,
        )
        : prepRegisterBufRing(this.#ring, this.#o.fuseFd, entry.id, entry.qid, flags, this.depth);
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
      } else if (onThread) {
        // Nothing else runs on a queue thread: wait right here. With a
        // handler still pending (waiting on something other than the ring),
        // wake soon and let the event loop run; idle, sleep until the kernel
        // or the session (stop, fault: MSG_RING) puts a completion here,
        // so an idle mount costs no wake-ups.
        const waited = this.#ring.waitHere(this.#pending > 0 ? BUSY_WAIT_US : Infinity);
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
    // The buffers go with the ring; only their mapping is left to undo.
    this.#buffers?.close(false);
    this.#iovecs?.close();
  }

  #count(entry: UringEntry, counter: number): void {
    this.#counters[entry.qid * QueueCounter.COUNT + counter]++;
  }

  /** A REGISTER or COMMIT_AND_FETCH completed: a request arrived, or the entry ended. */
  #arrived(entry: UringEntry, res: number, flags: number): void {
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
    if (this.#buffers) this.#place(entry, opcode, flags);
    // Mainline: the payload is the entry's own slot (a NOTIFY_REPLY moved its start).
    else entry.setData(this.#ownBytes, entry.ownOffset);
    if ((opcode === Opcode.READ || opcode === Opcode.WRITE) && this.#fromBackingFd(entry, opcode)) {
      return;
    }
    const dispatcher = this.#o.dispatcher;
    if (dispatcher) {
      this.#pending++;
      const serve = () => {
        const refused = fitUringRequest(entry, opcode, dispatcher.argSize(opcode), this.slotSize);
        if (refused) this.reply(entry, -refused, 0);
        else dispatcher.dispatch(entry);
      };
      if (entry.pages === "in") {
        // The FileSystem reads write data with the CPU: stage it first.
        this.#stageIn(entry).then(
          serve,
          (e: SystemError) => this.reply(entry, -(e.errno ?? Errno.EIO), 0),
        );
        return;
      }
      serve();
      return;
    }
    // The FileSystem lives on another thread: hand the request over, from
    // the entry's own slot (the only payload memory that thread knows).
    this.#count(entry, QueueCounter.forwarded);
    if (!this.#buffers) return this.#handOver(entry);
    // Pending until handed over: the serving loop must not sleep in the
    // kernel while the hand-over still waits for its microtasks.
    this.#pending++;
    this.#stageIn(entry).then(
      () => {
        this.#pending--;
        this.#handOver(entry);
      },
      (e: SystemError) => this.reply(entry, -(e.errno ?? Errno.EIO), 0), // reply() balances it
    );
  }

  #handOver(entry: UringEntry): void {
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

  /**
   * Buffer-ring modes: note which kernel buffer the entry holds (a
   * completion without the buffer flag keeps the entry's last one: the
   * kernel reuses it for a request it had queued already), and point the
   * request's data and reply there, or, for the client's pages under
   * zero-copy, at the entry's staging slot.
   */
  #place(entry: UringEntry, opcode: number, flags: number): void {
    const buffers = this.#buffers!;
    if (flags & IORING_CQE_F_BUFFER) {
      entry.bufferId = flags >>> IORING_CQE_BUFFER_SHIFT;
      this.#count(entry, QueueCounter.bufferSelects);
    } else if (entry.bufferId >= 0 && uringPayloadSize(entry.header, entry.headerOffset) > 0) {
      this.#count(entry, QueueCounter.bufferKept);
    }
    entry.pages = this.mode !== "zero_copy"
      ? null
      : PAGES_OUT.has(opcode)
      ? "out"
      : opcode === Opcode.WRITE || opcode === Opcode.NOTIFY_REPLY
      ? "in"
      : null;
    entry.replyInPages = entry.dataStaged = false;
    if (entry.bufferId >= 0) {
      const offset = buffers.offsetOf(entry.bufferId);
      entry.setData(buffers.bytes, offset);
      entry.setOut(buffers.view, buffers.bytes, offset, buffers.bufferSize);
      entry.dataAddress = entry.outAddress = buffers.addressOf(entry.bufferId);
    } else {
      this.#useOwnSlot(entry, true, true);
    }
    if (entry.pages === "out") this.#useOwnSlot(entry, false, true);
  }

  /** Point the request's data and/or reply at the entry's own slot. */
  #useOwnSlot(entry: UringEntry, data: boolean, out: boolean): void {
    if (data) {
      entry.setData(this.#ownBytes, entry.ownOffset);
      entry.dataAddress = entry.ownAddress;
    }
    if (out) {
      entry.setOut(this.#own, this.#ownBytes, entry.ownOffset, this.slotSize);
      entry.outAddress = entry.ownAddress;
    }
  }

  /**
   * Put the request's payload in the entry's own slot: the client's pages
   * of a zero-copy WRITE through WRITE_FIXED into the staging memfd, a
   * kernel buffer's bytes by copying (only when handing over).
   */
  #stageIn(entry: UringEntry): Promise<void> {
    const size = uringPayloadSize(entry.header, entry.headerOffset);
    if (entry.pages === "in") {
      this.#count(entry, QueueCounter.staged);
      // A NOTIFY_REPLY's argument is in the kernel buffer, its data in the
      // pages; put them together, as a mainline payload has them.
      const opcode = entry.header.getUint32(entry.headerOffset + InHeader.opcode, true);
      const lead = opcode === Opcode.NOTIFY_REPLY ? Math.min(NotifyRetrieveIn.SIZE, size) : 0;
      if (lead > 0) {
        const from = entry.dataOffset;
        this.#ownBytes.set(entry.data.subarray(from, from + lead), entry.ownOffset);
      }
      const length = Math.min(size, this.slotSize) - lead;
      const staged = () => {
        entry.dataStaged = true;
        this.#useOwnSlot(entry, true, false);
      };
      if (length <= 0) return Promise.resolve(staged());
      // The client's pages (slot `id`) into the memfd at the entry's own slot.
      const fd = this.#o.memory.payloadsFd;
      return this.#fixed(false, fd, 0n, length, entry.ownOffset + lead, entry.id).then((n) => {
        if (n !== length) throw new SystemError("staging write data", Errno.EIO);
        staged();
      });
    }
    if (size > 0 && entry.dataAddress !== entry.ownAddress) {
      const from = entry.dataOffset;
      const length = Math.min(size, this.slotSize);
      this.#ownBytes.set(entry.data.subarray(from, from + length), entry.ownOffset);
    }
    this.#useOwnSlot(entry, true, true);
    return Promise.resolve();
  }

  /**
   * Serve READ or WRITE here if the handle is backed by an fd; false if it
   * is not (the request then goes the usual way).
   */
  #fromBackingFd(entry: UringEntry, opcode: number): boolean {
    const h = entry.header;
    const arg = entry.argOffset;
    // fuse_read_in and fuse_write_in share fh, offset and size.
    const table = this.#o.backingFds;
    const fd = table.fdAt(h, arg + ReadIn.fh);
    if (fd < 0) return false;
    this.#pending++;
    const read = opcode === Opcode.READ;
    const fh = h.getUint32(arg + ReadIn.fh, true); // fdAt found its high half 0
    const offset = h.getUint32(arg + ReadIn.offset, true) +
      h.getUint32(arg + ReadIn.offset + 4, true) * TWO_32;
    const size = h.getUint32(arg + ReadIn.size, true);
    this.#o.debug?.(
      `unique: ${h.getUint32(entry.headerOffset + InHeader.unique, true)}, opcode: ` +
        `${read ? "READ" : "WRITE"} (${opcode}), nodeid: ` +
        `${h.getUint32(entry.headerOffset + InHeader.nodeid, true)}, size: ${size}, ` +
        `on queue ${entry.qid}, backing fd ${fd}${entry.pages ? ", zero-copy" : ""}`,
    );
    if (!read && size > uringPayloadSize(h, entry.headerOffset)) {
      this.reply(entry, -Errno.EINVAL, 0);
      return true;
    }
    const room = table.extent(
      fh,
      offset,
      read && !entry.pages ? Math.min(size, this.slotSize) : size,
      !read,
    );
    if (room <= 0 && (read || room < 0)) {
      // A read at a window's end, or a write that would cross it.
      this.reply(entry, room, 0);
      return true;
    }
    let n: number | Promise<number>;
    try {
      if (!read && (h.getUint32(arg + WriteIn.write_flags, true) & FUSE_WRITE_KILL_SUIDGID)) {
        // As the write of a caller without CAP_FSETID would.
        clearSuidSgid(fd, h.getUint32(entry.headerOffset + InHeader.gid, true));
      }
      n = this.transfer(entry, read, fd, table.start(fh, offset), room);
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
    // The reply's payload is a fuse_write_out at the start of the reply memory.
    entry.out.setUint32(entry.outOffset + WriteOut.size, res, true);
    entry.out.setUint32(entry.outOffset + 4, 0, true);
    this.reply(entry, 0, WriteOut.SIZE);
  }

  /** Write the reply's header and commit `entry` (COMMIT_AND_FETCH). */
  reply(entry: UringEntry, error: number, length: number): void {
    this.#pending--;
    writeUringReply(entry.header, entry.headerOffset, error, length);
    if (entry.pages === "out" && !entry.replyInPages && error === 0 && length > 0) {
      this.#stageOut(entry, length);
    } else this.#commit(entry);
  }

  /**
   * A handed-over request's reply is in the entry's own slot: move it to
   * where the kernel reads it (buffer-ring modes), then commit.
   */
  #committed(entry: UringEntry): void {
    if (!this.#buffers) return this.#commit(entry);
    const h = entry.header;
    const o = entry.headerOffset;
    const length = h.getInt32(o + OutHeader.error, true) === 0
      ? h.getUint32(o + OutHeader.len, true) - OutHeader.SIZE
      : 0;
    if (length <= 0) return this.#commit(entry);
    if (entry.pages === "out") return this.#stageOut(entry, length);
    if (entry.bufferId >= 0) {
      const to = this.#buffers.offsetOf(entry.bufferId);
      this.#buffers.bytes.set(
        this.#ownBytes.subarray(entry.ownOffset, entry.ownOffset + length),
        to,
      );
    }
    this.#commit(entry);
  }

  /**
   * Zero-copy: the reply's data is in the entry's staging slot; READ_FIXED
   * it from the memfd into the client's pages, then commit (an EIO reply if
   * that fails).
   */
  #stageOut(entry: UringEntry, length: number): void {
    this.#count(entry, QueueCounter.staged);
    // Pending until committed: the commit is prepared a few microtasks after
    // the copy completes, and the serving loop must not sleep before that.
    this.#pending++;
    // The memfd at the entry's own slot into the client's pages (slot `id`).
    const fd = this.#o.memory.payloadsFd;
    this.#fixed(true, fd, 0n, length, entry.ownOffset, entry.id)
      .then((n) => n, (e: SystemError) => -e.errno)
      .then((n) => {
        if (n !== length) writeUringReply(entry.header, entry.headerOffset, -Errno.EIO, 0);
        this.#pending--;
        this.#commit(entry);
      });
  }

  /** Commit `entry`, whose reply is already in its buffers. */
  #commit(entry: UringEntry): void {
    let at: number;
    try {
      at = prepCommit(this.#ring, this.#o.fuseFd, entry.header, entry.headerOffset, entry.qid);
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
   * Move `length` bytes between `fd` and the request: the reply's memory
   * for a read, the request's data for a write. READ_FIXED / WRITE_FIXED on
   * the entry's fixed slot (mainline: its payload buffer; zero-copy: the
   * client's pages), else READ / WRITE on the ring, or pread / pwrite on
   * this thread. The bytes moved. A direct call that fails throws a
   * SystemError, a ring operation rejects with one. The read is not linked
   * to the commit because the commit must carry the byte count.
   */
  transfer(
    entry: UringEntry,
    read: boolean,
    fd: number,
    offset: number,
    length: number,
  ): number | Promise<number> {
    const inPages = read ? entry.pages === "out" : entry.pages === "in" && !entry.dataStaged;
    if (inPages) {
      // Zero-copy: the client's pages are fixed slot `id`, addressed from 0.
      this.#count(entry, read ? QueueCounter.zeroCopyReads : QueueCounter.zeroCopyWrites);
      if (read) entry.replyInPages = true;
      return this.#fixed(read, fd, 0n, length, offset, entry.id);
    }
    this.#count(entry, read ? QueueCounter.fixedReads : QueueCounter.fixedWrites);
    const address = read ? entry.outAddress : entry.dataAddress;
    if (this.mode === "mainline" && !this.#direct) {
      return this.#fixed(read, fd, address, length, offset, entry.id);
    }
    const n = (read ? pinnedRead : pinnedWrite)(this.#ringIo, fd, address, length, offset);
    if (typeof n !== "number") this.#flushSoon();
    return n;
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
