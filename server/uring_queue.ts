/**
 * One serving thread of the io_uring transport: it owns an io_uring, the
 * ring entries of the kernel queues it serves (one queue per CPU, usually
 * one queue per thread), and the fixed-buffer table over their payloads,
 * and it submits every SQE of that ring itself, as the kernel requires.
 *
 * It runs in a Worker pinned to its queues' CPUs, and it blocks in
 * `io_uring_enter` while idle, so the kernel delivers each request as task
 * work on this very thread: the client, the request and the reply stay on
 * one CPU.
 *
 * What it serves itself: READ and WRITE of handles the FileSystem backed
 * with an fd (`OpenReply.backingFd`, looked up in the shared
 * {@linkcode BackingFdTable}), with READ_FIXED / WRITE_FIXED on the
 * request's own slot, or `pread`/`pwrite` into it with direct backing
 * calls. Every other request is handed to the thread that holds the
 * FileSystem with MSG_RING, which posts a completion on that thread's
 * ring; that thread writes the reply into the same entry memory and
 * answers with a MSG_RING on this ring, whereupon this thread commits.
 *
 * The pinned memory belongs to the session's thread, which frees it only
 * after this thread has ended.
 *
 * @module
 */

import { Errno, SystemError } from "../ffi/errno.ts";
import { clearSuidSgid, errno, libc, pinThread } from "../ffi/libc.ts";
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
import { BackingFdTable } from "../ops/backing_fds.ts";
import { prepCommit, prepRegister, uringPayloadSize, writeUringReply } from "./uring_commands.ts";

/** Per-queue counters, in shared memory: one Float64 each, queue-major. */
export const QueueCounter = {
  requests: 0,
  replies: 1,
  fixedReads: 2,
  fixedWrites: 3,
  forwarded: 4,
  COUNT: 5,
} as const;

/** What a queue thread is given to start. */
export interface UringQueueSetup {
  /** The session's `/dev/fuse` fd. */
  fuseFd: number;
  /** Kernel queues served (queue q takes requests from CPU q). */
  qids: number[];
  /** CPUs to run on (those of `qids`). */
  cpus: number[];
  /** Entries per queue. */
  depth: number;
  /** Payload bytes per entry. */
  slotSize: number;
  /** Pinned memory (owned by the session's thread): headers, payloads, iovecs. */
  headers: bigint;
  /** Payload buffers, `slotSize` each, registered as fixed buffers 0..n-1. */
  payloads: bigint;
  /** Room for three iovecs per entry (REGISTER's two, and the fixed-buffer table's). */
  iovecs: bigint;
  /** The session's handle → fd table. */
  backingFds: SharedArrayBuffer;
  /** Counters of all queues (see {@linkcode QueueCounter}). */
  counters: SharedArrayBuffer;
  /** `pread`/`pwrite` on this thread instead of READ_FIXED/WRITE_FIXED. */
  direct: boolean;
  /** The ring of the thread that holds the FileSystem. */
  mainRingFd: number;
  /** user_data of a handed-over request on that ring; `res` is `base` + entry. */
  forwardUserData: number;
  /** This thread's first entry in the session's numbering. */
  base: number;
  /** Log the requests this thread serves itself, as the dispatcher's `-d` does. */
  debug: boolean;
}

/** What a queue thread says to the session's thread. */
export type UringQueueMessage =
  | {
    type: "ready";
    ringFd: number;
    commitUserData: number;
    stopUserData: number;
    faultUserData: number;
  }
  | { type: "refused"; reason: string }
  | { type: "ended" };

/**
 * What a MSG_RING from the session's thread asks, as user_data after the
 * entries' own ids (see {@linkcode UringQueue}).
 */
const Extra = {
  /** Commit entry `res`: its reply is in place. */
  COMMIT: 0,
  /** Stop serving. */
  STOP: 1,
  /** Throw (fault injection for tests). */
  FAULT: 2,
} as const;

function view(address: bigint, length: number): ArrayBuffer {
  return Deno.UnsafePointerView.getArrayBuffer(Deno.UnsafePointer.create(address)!, length);
}

/** The queue thread's side of a set of ring entries. */
export class UringQueue {
  #s: UringQueueSetup;
  #ring: Ring;
  #headers: DataView;
  #fds: BackingFdTable;
  #counters: Float64Array;
  #n: number;
  /** Entries registered with the kernel (or held by the session's thread). */
  #live = 0;
  #stopped = false;
  #payloads: DataView;
  #pointers: Deno.PointerObject[] = [];
  #refusals: number[] | null = null;

  /** Set up the ring and its fixed-buffer table over the session's memory. */
  constructor(setup: UringQueueSetup) {
    this.#s = setup;
    this.#n = setup.qids.length * setup.depth;
    const n = this.#n;
    const entries = 1 << Math.ceil(Math.log2(Math.max(64, n * 4)));
    this.#ring = new Ring({ entries, cqEntries: entries * 2 });
    this.#headers = new DataView(view(setup.headers, n * UringReqHeader.SIZE));
    this.#fds = new BackingFdTable(setup.backingFds);
    this.#counters = new Float64Array(setup.counters);
    this.#payloads = new DataView(view(setup.payloads, n * setup.slotSize));
    for (let i = 0; i < n; i++) this.#pointers.push(Deno.UnsafePointer.create(this.#payload(i))!);
    // user_data: entry i is i; its READ_FIXED n + i; its WRITE_FIXED 2n + i; then Extra.
    for (let i = 0; i < n; i++) this.#ring.register((res) => this.#arrived(i, res));
    for (let i = 0; i < n; i++) this.#ring.register((res) => this.#readDone(i, res));
    for (let i = 0; i < n; i++) this.#ring.register((res) => this.#writeDone(i, res));
    this.#ring.register((res) => this.#commit(res));
    this.#ring.register(() => this.#stopped = true);
    this.#ring.register(() => {
      throw new Error("fault injected into a queue thread");
    });
    this.#ring.registerSparseBuffers(n);
    this.#ring.updateBuffers(0, Deno.UnsafePointer.create(setup.iovecs + BigInt(n * 32))!, n);
  }

  /**
   * Pin this thread, register every entry with the kernel, and say whether
   * it took them. Refused REGISTERs complete during submit; accepted ones
   * stay pending until a request arrives.
   */
  start(): UringQueueMessage {
    pinThread(this.#s.cpus);
    for (let i = 0; i < this.#n; i++) {
      const qid = this.#qid(i);
      const at = prepRegister(this.#ring, this.#s.fuseFd, this.#s.iovecs + BigInt(i * 32), qid);
      this.#ring.track(at, i);
      this.#live++;
    }
    this.#ring.submit();
    const refusals: number[] = [];
    this.#refusals = refusals;
    this.#ring.reap();
    this.#refusals = null;
    if (refusals.length > 0) {
      const names = [...new Set(refusals.map((e) => new SystemError("", e).code))].join(", ");
      return {
        type: "refused",
        reason: `REGISTER failed for ${refusals.length} entries: ${names}`,
      };
    }
    const base = this.#n * 3;
    return {
      type: "ready",
      ringFd: this.#ring.fd,
      commitUserData: base + Extra.COMMIT,
      stopUserData: base + Extra.STOP,
      faultUserData: base + Extra.FAULT,
    };
  }

  /**
   * Serve until the kernel has ended every entry (unmount) or the session
   * says stop. Blocks this thread; nothing else runs on it.
   */
  serve(): void {
    while (this.#live > 0 && !this.#stopped) {
      this.#ring.submitAndWait();
      this.#ring.reap();
    }
  }

  /** Release the ring (its pending commands are cancelled with it). */
  close(): Promise<void> {
    return this.#ring.close();
  }

  #qid(i: number): number {
    return this.#s.qids[Math.floor(i / this.#s.depth)];
  }

  #count(i: number, counter: number): void {
    this.#counters[this.#qid(i) * QueueCounter.COUNT + counter]++;
  }

  /** A REGISTER or COMMIT_AND_FETCH completed: a request arrived, or the entry ended. */
  #arrived(i: number, res: number): void {
    if (res < 0) {
      this.#live--;
      if (this.#refusals) this.#refusals.push(-res);
      else if (res !== -Errno.ENOTCONN && res !== -Errno.ENODEV && res !== -Errno.ECANCELED) {
        console.error(new SystemError("fuse uring entry", -res, `queue ${this.#qid(i)}`).message);
      }
      return;
    }
    this.#count(i, QueueCounter.requests);
    const h = this.#headers;
    const o = i * UringReqHeader.SIZE;
    const opcode = h.getUint32(o + InHeader.opcode, true);
    const arg = o + UringReqHeader.op_in;
    if (opcode === Opcode.READ || opcode === Opcode.WRITE) {
      // ReadIn and WriteIn share fh, offset and size.
      const fhHigh = h.getUint32(arg + ReadIn.fh + 4, true);
      const fd = fhHigh === 0 ? this.#fds.get(h.getUint32(arg + ReadIn.fh, true)) : -1;
      if (fd >= 0) {
        if (this.#s.debug) this.#log(i, opcode, fd);
        const offset = h.getUint32(arg + ReadIn.offset, true) +
          h.getUint32(arg + ReadIn.offset + 4, true) * 4294967296;
        const size = h.getUint32(arg + ReadIn.size, true);
        if (opcode === Opcode.READ) this.#read(i, fd, offset, Math.min(size, this.#s.slotSize));
        else if (size > uringPayloadSize(h, o)) this.#reply(i, -Errno.EINVAL, 0);
        else if (!this.#killSuidgid(i, h.getUint32(arg + WriteIn.write_flags, true), fd)) return;
        else this.#write(i, fd, offset, size);
        return;
      }
    }
    // Everything else is answered by the thread that holds the FileSystem.
    this.#count(i, QueueCounter.forwarded);
    const ring = this.#ring;
    prepMsgRing(
      ring.sqes,
      ring.sqe(),
      this.#s.mainRingFd,
      this.#s.base + i,
      this.#s.forwardUserData,
    );
  }

  /**
   * Clear setuid/setgid before a write when the kernel asks (the caller
   * lacks CAP_FSETID); false, with the error replied, if that failed.
   */
  #killSuidgid(i: number, writeFlags: number, fd: number): boolean {
    if ((writeFlags & FUSE_WRITE_KILL_SUIDGID) === 0) return true;
    try {
      clearSuidSgid(fd, this.#headers.getUint32(i * UringReqHeader.SIZE + InHeader.gid, true));
      return true;
    } catch (e) {
      this.#reply(i, -((e as SystemError).errno ?? Errno.EIO), 0);
      return false;
    }
  }

  #log(i: number, opcode: number, fd: number): void {
    const h = this.#headers;
    const o = i * UringReqHeader.SIZE;
    const unique = h.getUint32(o + InHeader.unique, true) +
      h.getUint32(o + InHeader.unique + 4, true) * 4294967296;
    console.error(
      `unique: ${unique}, opcode: ${opcode === Opcode.READ ? "READ" : "WRITE"} (${opcode}), ` +
        `nodeid: ${h.getUint32(o + InHeader.nodeid, true)}, ` +
        `insize: ${h.getUint32(o + InHeader.len, true)}, pid: ${
          h.getUint32(o + InHeader.pid, true)
        }` +
        `, on queue ${this.#qid(i)}, backing fd ${fd}`,
    );
  }

  #payload(i: number): bigint {
    return this.#s.payloads + BigInt(i * this.#s.slotSize);
  }

  #read(i: number, fd: number, offset: number, length: number): void {
    this.#count(i, QueueCounter.fixedReads);
    if (this.#s.direct) {
      const n = libc.pread64(fd, this.#pointers[i], BigInt(length), BigInt(offset));
      this.#readDone(i, n < 0 ? -errno() : n);
      return;
    }
    const at = this.#ring.sqe();
    prepReadFixed(this.#ring.sqes, at, fd, this.#payload(i), length, offset, i);
    this.#ring.track(at, this.#n + i);
  }

  #readDone(i: number, res: number): void {
    this.#reply(i, res < 0 ? res : 0, res < 0 ? 0 : res);
  }

  #write(i: number, fd: number, offset: number, length: number): void {
    this.#count(i, QueueCounter.fixedWrites);
    if (this.#s.direct) {
      const n = libc.pwrite64(fd, this.#pointers[i], BigInt(length), BigInt(offset));
      this.#writeDone(i, n < 0 ? -errno() : n);
      return;
    }
    const at = this.#ring.sqe();
    prepWriteFixed(this.#ring.sqes, at, fd, this.#payload(i), length, offset, i);
    this.#ring.track(at, 2 * this.#n + i);
  }

  #writeDone(i: number, res: number): void {
    if (res < 0) return this.#reply(i, res, 0);
    // The reply's payload is a fuse_write_out at the start of the slot.
    const o = i * this.#s.slotSize;
    this.#payloads.setUint32(o + WriteOut.size, res, true);
    this.#payloads.setUint32(o + 4, 0, true);
    this.#reply(i, 0, WriteOut.SIZE);
  }

  #reply(i: number, error: number, length: number): void {
    writeUringReply(this.#headers, i * UringReqHeader.SIZE, error, length);
    this.#commit(i);
  }

  /** Commit entry `i`, whose reply is already in its buffers. */
  #commit(i: number): void {
    const o = i * UringReqHeader.SIZE;
    this.#ring.track(prepCommit(this.#ring, this.#s.fuseFd, this.#headers, o, this.#qid(i)), i);
    this.#count(i, QueueCounter.replies);
  }
}

// WriteIn.size and ReadIn.size sit at the same offset; the code above relies on it.
if (WriteIn.size !== ReadIn.size || WriteIn.offset !== ReadIn.offset) {
  throw new Error("fuse_read_in and fuse_write_in no longer share their leading fields");
}
