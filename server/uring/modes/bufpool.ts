/**
 * The buffer-pool mode (Linux 7.3+, FUSE 7.46; the seeds' series as it
 * reached mainline): each queue has one pinned region, its pool, which the
 * ring holds as a fixed buffer and the kernel cuts into buffers of its
 * maximum payload size. A request that carries a payload (names, write
 * data, room for a reply) takes a free buffer; the header says which
 * (`fuse_uring_ent_in_out.offset`). A request without one takes none, and
 * an idle entry gives its buffer back, so a pool may hold fewer buffers
 * than its queue has entries: a request that finds none waits in the
 * kernel for the next commit.
 *
 * Setting up a queue: ADD_QUEUE, ADD_BUFPOOL with IORING_URING_CMD_FIXED
 * naming the pool's fixed buffer, then each entry's REGISTER with only a
 * header iovec; every COMMIT_AND_FETCH names the pool's fixed buffer too.
 * File data moves between a backing fd and the pool with READ_FIXED /
 * WRITE_FIXED on that buffer (pread / pwrite when direct).
 *
 * @module
 */

import { Errno, SystemError } from "../../../ffi/errno.ts";
import { PinnedRegion } from "../../../ffi/memory.ts";
import { UringEntInOut, UringReqHeader } from "../../../ops/abi.ts";
import { prepAddBufPool, prepAddQueue, prepRegisterPooled, uringPayloadSize } from "../commands.ts";
import { QueueCounter } from "../counters.ts";
import type { UringEntry } from "../entry.ts";
import { viewAt } from "../entry_memory.ts";
import {
  copyFromOwnSlot,
  copyToOwnSlot,
  type ModeContext,
  type PayloadMode,
  transferThroughServer,
  type UringMode,
  useOwnSlot,
} from "./mode.ts";

const ENT = UringReqHeader.ring_ent_in_out;

/** Throw the kernel's refusal of a setup command of queue `qid`. */
function check(command: string, qid: number, res: number): void {
  if (res >= 0) return;
  const why = res === -Errno.EINVAL && command.startsWith("ADD_QUEUE")
    ? "this kernel has no FUSE buffer pools (Linux 7.3+)"
    : res === -Errno.EPERM
    ? "zero-copy needs CAP_SYS_ADMIN"
    : `queue ${qid}`;
  throw new SystemError(command, -res, why);
}

/** Payloads in a pinned pool per queue, registered as a fixed buffer after the entries' slots. */
export class BufPoolMode implements PayloadMode {
  /** See {@linkcode PayloadMode.name}. */
  readonly name: UringMode = "bufpool";
  /** Each entry's REGISTER iovecs (header, empty payload), then the pools' iovecs. */
  #iovecs: PinnedRegion | null = null;
  /** All pools, as bytes and views (queue `i`'s starts at `i * poolSize`). */
  #poolBytes: Uint8Array<ArrayBuffer>;
  #poolView: DataView<ArrayBuffer>;

  /** A mode over the transport's context `c`, whose memory must hold the pools. */
  constructor(readonly c: ModeContext) {
    const m = c.memory;
    if (m.poolSize < m.slotSize) throw new RangeError(`${this.name} needs a buffer pool`);
    const all = viewAt(m.pool, m.poolSize * c.qids.length);
    this.#poolBytes = new Uint8Array(all);
    this.#poolView = new DataView(all);
  }

  /** ADD_QUEUE's flags. */
  protected get queueFlags(): number {
    return 0;
  }

  /** The fixed-buffer slot where the kernel installs `entry`'s client pages, or -1. */
  protected pagesSlot(_entry: UringEntry): number {
    return -1;
  }

  /**
   * Put the pools in the fixed-buffer table after the entries' slots, and
   * make each queue with its pool. Throws with the kernel's answer (EINVAL
   * from a kernel without buffer pools, EPERM for zero-copy without
   * CAP_SYS_ADMIN), before any entry registers.
   */
  setup(): void {
    const c = this.c;
    const m = c.memory;
    const queues = c.qids.length;
    const v = (this.#iovecs = new PinnedRegion((m.n + queues) * 32)).view;
    for (let i = 0; i < m.n; i++) {
      v.setBigUint64(i * 32, m.headers + BigInt(i * UringReqHeader.SIZE), true);
      v.setBigUint64(i * 32 + 8, BigInt(UringReqHeader.SIZE), true);
    }
    for (let i = 0; i < queues; i++) {
      const at = m.n * 32 + i * 16;
      v.setBigUint64(at, m.pool + BigInt(i * m.poolSize), true);
      v.setBigUint64(at + 8, BigInt(m.poolSize), true);
    }
    c.ring.registerSparseBuffers(m.n + queues);
    c.ring.updateBuffers(m.n, this.#iovecs.at(m.n * 32), queues);
    c.qids.forEach((qid, i) => {
      const ring = c.ring;
      const flags = this.queueFlags;
      const what = flags ? "ADD_QUEUE (zero-copy)" : "ADD_QUEUE";
      check(what, qid, ring.runNow(() => prepAddQueue(ring, c.fuseFd, qid, flags)));
      const pool = m.pool + BigInt(i * m.poolSize);
      const slot = m.n + i;
      check(
        "ADD_BUFPOOL",
        qid,
        ring.runNow(() => prepAddBufPool(ring, c.fuseFd, qid, pool, m.poolSize, slot)),
      );
    });
  }

  /** REGISTER with the entry's header iovec, an empty payload, and the pool's slot. */
  prepRegister(fuseFd: number, entry: UringEntry): number {
    const iovecs = this.#iovecs!.address + BigInt(entry.id * 32);
    return prepRegisterPooled(
      this.c.ring,
      fuseFd,
      iovecs,
      entry.qid,
      this.commandSlot(entry),
      this.pagesSlot(entry),
    );
  }

  /** The pool of `entry`'s queue, as a fixed buffer. */
  commandSlot(entry: UringEntry): number {
    return this.c.memory.n + this.#queueIndex(entry);
  }

  #queueIndex(entry: UringEntry): number {
    return Math.floor(entry.id / this.c.depth);
  }

  /** Where in all pools `entry`'s buffer starts (the header's offset, in its queue's pool). */
  #poolOffset(entry: UringEntry): number {
    const offset = entry.header.getUint32(entry.headerOffset + ENT + UringEntInOut.offset, true);
    return this.#queueIndex(entry) * this.c.memory.poolSize + offset;
  }

  /** Whether this request's data is the client's pages, going `in` or `out` (zero-copy only). */
  protected pagesOf(_entry: UringEntry, _opcode: number): "in" | "out" | null {
    return null;
  }

  /**
   * Point the request's data and reply at its buffer in the pool; a reply
   * bound for the client's pages goes to the entry's staging slot, unless a
   * backing fd fills the pages.
   */
  place(entry: UringEntry, opcode: number, _cqeFlags: number): void {
    const c = this.c;
    const at = this.#poolOffset(entry);
    entry.setData(this.#poolBytes, at);
    entry.setOut(this.#poolView, this.#poolBytes, at, c.memory.slotSize);
    entry.dataAddress = entry.outAddress = c.memory.pool + BigInt(at);
    entry.poolOffset = at;
    entry.pages = this.pagesOf(entry, opcode);
    entry.replyInPages = entry.dataStaged = false;
    if (entry.pages === "out") useOwnSlot(c, entry, false, true);
    if (entry.pages === null && uringPayloadSize(entry.header, entry.headerOffset) > 0) {
      c.count(entry, QueueCounter.poolPayloads);
    }
  }

  /** READ_FIXED / WRITE_FIXED between `fd` and the pool's buffer, or pread / pwrite when direct. */
  transfer(
    entry: UringEntry,
    read: boolean,
    fd: number,
    offset: number,
    length: number,
  ): number | Promise<number> {
    return transferThroughServer(this.c, entry, read, fd, offset, length, this.commandSlot(entry));
  }

  /** For another thread, copy the payload into the entry's own slot. */
  stageIn(entry: UringEntry, handOver: boolean): Promise<void> | null {
    if (!handOver) return null;
    copyToOwnSlot(this.c, entry, uringPayloadSize(entry.header, entry.headerOffset));
    return Promise.resolve();
  }

  /** The reply is in the pool already. */
  stageOut(_entry: UringEntry, _length: number): Promise<boolean> | null {
    return null;
  }

  /** Copy a handed-over reply from the entry's own slot into its pool buffer. */
  handBack(entry: UringEntry, length: number): Promise<boolean> | null {
    copyFromOwnSlot(this.c, entry, this.#poolBytes, entry.poolOffset, length);
    return null;
  }

  /** Unmap the iovecs (the ring, which held the pools, is closed; the pools are the session's). */
  close(): void {
    this.#iovecs?.close();
  }
}
