/**
 * Where a request's payload lives, and how file data moves in and out of
 * it: the part of the io_uring transport that differs between kernels.
 *
 * The transport (`../transport.ts`) runs the same loop for every mode: a
 * request arrives, the mode places it ({@linkcode PayloadMode.place}), the
 * dispatcher answers (moving file data through
 * {@linkcode PayloadMode.transfer}), the mode finishes the reply
 * ({@linkcode PayloadMode.stageOut}), the transport commits. One file per
 * mode:
 *
 * - `mainline.ts`: a payload buffer per entry, pinned and registered as
 *   fixed buffer `id` (Linux 6.14+);
 * - `buf_ring.ts`: payloads in a kernel-managed buffer ring (the seeds' v4
 *   series);
 * - `zero_copy.ts`: as `buf_ring`, and the client's own pages of READ and
 *   WRITE installed as fixed buffer `id`;
 * - `bufpool.ts`: payloads in a buffer pool per queue, one pinned region
 *   the server registers and the kernel cuts into buffers (Linux 7.3, FUSE
 *   7.46: the series' successor in mainline);
 * - `bufpool_zero_copy.ts`: as `bufpool`, and the client's pages of READ
 *   and WRITE of files opened with FOPEN_IO_URING_ZERO_COPY installed as
 *   fixed buffer `id`.
 *
 * Adding a mode is adding a file here and its entry in `modes.ts`.
 *
 * Kernel passthrough (FUSE_PASSTHROUGH, `ops/backing_ids.ts`) is not a
 * mode: it decides at OPEN that the kernel itself reads and writes a
 * backing file, so that file's data never reaches a ring in any mode.
 *
 * @module
 */

import type { Ring } from "../../../ffi/ring.ts";
import type { RingIo } from "../../io/ring_io.ts";
import { pinnedRead, pinnedWrite } from "../../io/ring_io.ts";
import { QueueCounter } from "../counters.ts";
import type { UringEntry } from "../entry.ts";
import type { EntryAddresses } from "../entry_memory.ts";

/**
 * How io_uring queues take requests: `mainline` (an iovec pair per entry,
 * Linux 6.14+); on Linux 7.3+ (FUSE 7.46) `bufpool` (payloads in a buffer
 * pool per queue) and `bufpool_zero_copy` (and READ/WRITE data in the
 * client's own pages, as fixed buffers; CAP_SYS_ADMIN); on kernels with the
 * seeds' FUSE buffer-ring series, `buf_ring` (payloads in a kernel-managed
 * buffer ring) and `zero_copy` (and the client's pages).
 */
export type UringMode = "mainline" | "bufpool" | "bufpool_zero_copy" | "buf_ring" | "zero_copy";

/** What a mode may use of the transport that runs it. */
export interface ModeContext {
  /** The transport's ring. */
  readonly ring: Ring;
  /** The session's `/dev/fuse` fd (setup commands go to it). */
  readonly fuseFd: number;
  /** The entries' pinned memory (headers, own payload slots). */
  readonly memory: EntryAddresses;
  /** Entries per queue. */
  readonly depth: number;
  /** The kernel queues this transport serves; entry `id` is on `qids[floor(id / depth)]`. */
  readonly qids: readonly number[];
  /** The entries' own slots, as views. */
  readonly own: DataView<ArrayBuffer>;
  /** The entries' own slots, as bytes. */
  readonly ownBytes: Uint8Array<ArrayBuffer>;
  /** Backing I/O on the ring, or null for direct system calls. */
  readonly ringIo: RingIo | null;
  /** Count an event of `entry`'s queue (see `QueueCounter`). */
  count(entry: UringEntry, counter: number): void;
  /** Add `amount` to a counter of `entry`'s queue (bytes moved). */
  add(entry: UringEntry, counter: number, amount: number): void;
  /** READ_FIXED from `fd` into fixed slot `slot` (`read`), or WRITE_FIXED from it. */
  fixed(
    read: boolean,
    fd: number,
    address: bigint,
    length: number,
    offset: number,
    slot: number,
  ): Promise<number>;
  /** Have what was prepared on the ring submitted soon. */
  flushSoon(): void;
}

/** Where a mode's requests' payloads live, and how data moves. */
export interface PayloadMode {
  /** The mode's name. */
  readonly name: UringMode;
  /** Register the mode's memory with the ring: fixed buffers, a buffer ring. */
  setup(): void;
  /** Prepare `entry`'s REGISTER on the ring; the SQE's index. */
  prepRegister(fuseFd: number, entry: UringEntry): number;
  /** The fixed buffer `entry`'s commands must name (its queue's pool), or -1. */
  commandSlot(entry: UringEntry): number;
  /**
   * A request arrived in `entry` (`cqeFlags` from its completion): point
   * its data and its reply's memory where this mode put the payload.
   */
  place(entry: UringEntry, opcode: number, cqeFlags: number): void;
  /**
   * Move `length` bytes between `fd` at `offset` and the request: into
   * the reply (`read`), or from the request's data. The bytes moved; a
   * direct call throws a SystemError, a ring operation rejects with one.
   */
  transfer(
    entry: UringEntry,
    read: boolean,
    fd: number,
    offset: number,
    length: number,
  ): number | Promise<number>;
  /**
   * Make the request readable where a FileSystem reads it with the CPU:
   * for another thread (`handOver`), the entry's own slot, the only payload
   * memory it knows. Null when it is already.
   */
  stageIn(entry: UringEntry, handOver: boolean): Promise<void> | null;
  /**
   * The reply's `length` payload bytes are written where the FileSystem
   * could write them; finish what the kernel needs before the commit
   * (zero-copy: copy them into the client's pages). Null when nothing is
   * left; else resolves with whether it worked.
   */
  stageOut(entry: UringEntry, length: number): Promise<boolean> | null;
  /**
   * A handed-over request's reply is in the entry's own slot: move it
   * where the kernel reads it, as {@linkcode stageOut}.
   */
  handBack(entry: UringEntry, length: number): Promise<boolean> | null;
  /** Unmap what the mode mapped (once the ring is closed). */
  close(): void;
}

/**
 * Move `length` bytes between `fd` at `offset` and `entry`'s payload memory
 * in the server (its data, or its reply): READ_FIXED / WRITE_FIXED on
 * fixed buffer `slot` (-1: that memory is no fixed buffer, so a plain READ /
 * WRITE) on the ring, or pread / pwrite when direct.
 */
export function transferThroughServer(
  c: ModeContext,
  entry: UringEntry,
  read: boolean,
  fd: number,
  offset: number,
  length: number,
  slot: number,
): number | Promise<number> {
  c.count(entry, read ? QueueCounter.fixedReads : QueueCounter.fixedWrites);
  c.add(entry, QueueCounter.bytesThroughServer, length);
  const address = read ? entry.outAddress : entry.dataAddress;
  if (c.ringIo && slot >= 0) return c.fixed(read, fd, address, length, offset, slot);
  const n = (read ? pinnedRead : pinnedWrite)(c.ringIo, fd, address, length, offset);
  if (typeof n !== "number") c.flushSoon();
  return n;
}

/**
 * For a FileSystem on another thread, copy the request's payload from
 * wherever the kernel put it into `entry`'s own slot, and point its data
 * and reply there (the only payload memory that thread knows).
 */
export function copyToOwnSlot(c: ModeContext, entry: UringEntry, size: number): void {
  if (size > 0 && entry.dataAddress !== entry.ownAddress) {
    const from = entry.dataOffset;
    const length = Math.min(size, c.memory.slotSize);
    c.ownBytes.set(entry.data.subarray(from, from + length), entry.ownOffset);
    c.add(entry, QueueCounter.bytesThroughServer, length);
  }
  useOwnSlot(c, entry, true, true);
}

/** Copy a handed-over reply of `length` bytes from `entry`'s own slot to `to` at `at`. */
export function copyFromOwnSlot(
  c: ModeContext,
  entry: UringEntry,
  to: Uint8Array,
  at: number,
  length: number,
): void {
  to.set(c.ownBytes.subarray(entry.ownOffset, entry.ownOffset + length), at);
  c.add(entry, QueueCounter.bytesThroughServer, length);
}

/** Point `entry`'s data (`data`) and/or reply (`out`) at its own slot. */
export function useOwnSlot(c: ModeContext, entry: UringEntry, data: boolean, out: boolean): void {
  if (data) {
    entry.setData(c.ownBytes, entry.ownOffset);
    entry.dataAddress = entry.ownAddress;
  }
  if (out) {
    entry.setOut(c.own, c.ownBytes, entry.ownOffset, c.memory.slotSize);
    entry.outAddress = entry.ownAddress;
  }
}
