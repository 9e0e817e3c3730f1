/**
 * The buffer-ring mode (kernels with the seeds' FUSE buffer-ring series,
 * IORING_REGISTER_KMBUF_RING): the headers are one fixed buffer, and the
 * kernel puts each payload in a buffer of a kernel-managed buffer ring
 * (group 0) that it picks, names in the completion, and takes back itself.
 * File data moves between a backing fd and that buffer (READ/WRITE on the
 * ring, or pread/pwrite). The series needs one ring per queue, so a
 * transport serves one queue.
 *
 * @module
 */

import { KernelBufferRing } from "../../../ffi/kernel_buffer_ring.ts";
import { alignUp, PAGE_SIZE, PinnedRegion } from "../../../ffi/memory.ts";
import { IORING_CQE_BUFFER_SHIFT, IORING_CQE_F_BUFFER } from "../../../ffi/uring_abi.ts";
import { FUSE_URING_BUF_RING, FUSE_URING_RINGBUF_GROUP, UringReqHeader } from "../../../ops/abi.ts";
import { prepRegisterBufRing, uringPayloadSize } from "../commands.ts";
import { QueueCounter } from "../counters.ts";
import type { UringEntry } from "../entry.ts";
import {
  copyFromOwnSlot,
  copyToOwnSlot,
  type ModeContext,
  type PayloadMode,
  transferThroughServer,
  type UringMode,
  useOwnSlot,
} from "./mode.ts";

/** Payloads in kernel-managed buffers; the entries' own slots stage what is handed over. */
export class BufRingMode implements PayloadMode {
  /** See {@linkcode PayloadMode.name}. */
  readonly name: UringMode = "buf_ring";
  /** The kernel-managed buffers, once set up. */
  protected buffers!: KernelBufferRing;
  /** The header buffer's iovec, kept while the kernel may read it. */
  #iovec: PinnedRegion | null = null;

  /** A mode over the transport's context `c`. */
  constructor(readonly c: ModeContext) {}

  /** Flags of this mode's REGISTER. */
  protected get registerFlags(): number {
    return FUSE_URING_BUF_RING;
  }

  /** Fixed-buffer index of the header buffer (and the size of the table: one more). */
  protected get headerSlot(): number {
    return 0;
  }

  /** Register the headers as one fixed buffer and the buffer ring of group 0. */
  setup(): void {
    const c = this.c;
    const m = c.memory;
    const iov = (this.#iovec = new PinnedRegion(16)).view;
    iov.setBigUint64(0, m.headers, true);
    iov.setBigUint64(8, BigInt(m.n * UringReqHeader.SIZE), true);
    c.ring.registerSparseBuffers(this.headerSlot + 1);
    c.ring.updateBuffers(this.headerSlot, this.#iovec.pointer, 1);
    // One buffer per entry at most is held at a time; the ring's size is a power of two.
    const count = 1 << Math.ceil(Math.log2(c.depth));
    this.buffers = new KernelBufferRing(
      c.ring,
      alignUp(m.slotSize, PAGE_SIZE),
      count,
      FUSE_URING_RINGBUF_GROUP,
    );
  }

  /** REGISTER naming the entry's header in the header buffer. */
  prepRegister(fuseFd: number, entry: UringEntry): number {
    const c = this.c;
    return prepRegisterBufRing(c.ring, fuseFd, entry.id, entry.qid, this.registerFlags, c.depth);
  }

  /** No pool: commands name no fixed buffer. */
  commandSlot(): number {
    return -1;
  }

  /** The client's pages this opcode's data is in (zero-copy only). */
  protected pagesOf(_opcode: number): "in" | "out" | null {
    return null;
  }

  /**
   * Note which kernel buffer the entry holds (a completion without the
   * buffer flag keeps the entry's last one: the kernel reuses it for a
   * request it had queued already), and point the request's data and reply
   * there, or, for the client's pages under zero-copy, at the entry's own
   * staging slot.
   */
  place(entry: UringEntry, opcode: number, cqeFlags: number): void {
    const c = this.c;
    const buffers = this.buffers;
    if (cqeFlags & IORING_CQE_F_BUFFER) {
      entry.bufferId = cqeFlags >>> IORING_CQE_BUFFER_SHIFT;
      c.count(entry, QueueCounter.bufferSelects);
    } else if (entry.bufferId >= 0 && uringPayloadSize(entry.header, entry.headerOffset) > 0) {
      c.count(entry, QueueCounter.bufferKept);
    }
    entry.pages = this.pagesOf(opcode);
    entry.replyInPages = entry.dataStaged = false;
    if (entry.bufferId >= 0) {
      const offset = buffers.offsetOf(entry.bufferId);
      entry.setData(buffers.bytes, offset);
      entry.setOut(buffers.view, buffers.bytes, offset, buffers.bufferSize);
      entry.dataAddress = entry.outAddress = buffers.addressOf(entry.bufferId);
    } else {
      useOwnSlot(c, entry, true, true);
    }
    if (entry.pages === "out") useOwnSlot(c, entry, false, true);
  }

  /** READ / WRITE on the ring between `fd` and the buffer, or pread / pwrite when direct. */
  transfer(
    entry: UringEntry,
    read: boolean,
    fd: number,
    offset: number,
    length: number,
  ): number | Promise<number> {
    // The kernel's buffers are no fixed buffers of this ring: plain READ / WRITE.
    return transferThroughServer(this.c, entry, read, fd, offset, length, -1);
  }

  /** For another thread, copy the kernel buffer's bytes into the entry's own slot. */
  stageIn(entry: UringEntry, handOver: boolean): Promise<void> | null {
    if (!handOver) return null;
    copyToOwnSlot(this.c, entry, uringPayloadSize(entry.header, entry.headerOffset));
    return Promise.resolve();
  }

  /** The reply is in the kernel's buffer already. */
  stageOut(_entry: UringEntry, _length: number): Promise<boolean> | null {
    return null;
  }

  /** Copy a handed-over reply from the entry's own slot into its kernel buffer. */
  handBack(entry: UringEntry, length: number): Promise<boolean> | null {
    if (entry.bufferId >= 0) {
      const to = this.buffers.offsetOf(entry.bufferId);
      copyFromOwnSlot(this.c, entry, this.buffers.bytes, to, length);
    }
    return null;
  }

  /** Unmap the buffers (they went with the ring) and the header iovec. */
  close(): void {
    this.buffers?.close(false);
    this.#iovec?.close();
  }
}
