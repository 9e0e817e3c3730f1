/**
 * The buffer-pool mode with zero-copy (Linux 7.3+, CAP_SYS_ADMIN): as
 * `bufpool`, but the queue is made with FUSE_URING_ZERO_COPY and each entry
 * names its fixed-buffer slot (`ent_zero_copy_buf_index` = entry). A READ or
 * WRITE of a file opened with FOPEN_IO_URING_ZERO_COPY (the dispatcher sets
 * it on opens served from a backing fd) then arrives with
 * FUSE_URING_ENT_ZERO_COPY: the client's own pages are installed in that
 * slot and no pool buffer is taken for the data. READ and WRITE of a
 * backing fd are READ_FIXED / WRITE_FIXED on the slot, and the server
 * never copies or maps those pages; what a FileSystem reads or makes
 * itself goes through the entry's staging slot in a memfd.
 *
 * @module
 */

import {
  FUSE_URING_ENT_ZERO_COPY,
  FUSE_URING_POOL_ZERO_COPY,
  Opcode,
  UringEntInOut,
  UringReqHeader,
} from "../../../ops/abi.ts";
import { uringPayloadSize } from "../commands.ts";
import type { UringEntry } from "../entry.ts";
import { BufPoolMode } from "./bufpool.ts";
import type { ModeContext, UringMode } from "./mode.ts";
import { stagePagesIn, stagePagesOut, transferPages } from "./pages.ts";

const ENT = UringReqHeader.ring_ent_in_out;

/** A buffer pool per queue, and the client's pages of READ and WRITE as fixed buffers. */
export class BufPoolZeroCopyMode extends BufPoolMode {
  /** See {@linkcode PayloadMode.name}. */
  override readonly name: UringMode = "bufpool_zero_copy";

  /** A mode over `c`, whose own slots must be a memfd's pages. */
  constructor(c: ModeContext) {
    super(c);
    if (c.memory.payloadsFd < 0) {
      throw new RangeError("bufpool_zero_copy needs its staging slots in a memfd");
    }
  }

  protected override get queueFlags(): number {
    return FUSE_URING_POOL_ZERO_COPY;
  }

  /** Entry `id`'s client pages go into fixed-buffer slot `id`. */
  protected override pagesSlot(entry: UringEntry): number {
    return entry.id;
  }

  /** The kernel says so in the header (FUSE_URING_ENT_ZERO_COPY): a WRITE's pages in, a READ's out. */
  protected override pagesOf(entry: UringEntry, opcode: number): "in" | "out" | null {
    const flags = entry.header.getUint32(entry.headerOffset + ENT + UringEntInOut.flags, true);
    if ((flags & FUSE_URING_ENT_ZERO_COPY) === 0) return null;
    return opcode === Opcode.WRITE ? "in" : "out";
  }

  /** READ_FIXED / WRITE_FIXED on the client's pages (slot `id`) when the data is there. */
  override transfer(
    entry: UringEntry,
    read: boolean,
    fd: number,
    offset: number,
    length: number,
  ): number | Promise<number> {
    return transferPages(this.c, entry, read, fd, offset, length) ??
      super.transfer(entry, read, fd, offset, length);
  }

  /** A zero-copy WRITE's data is staged before the CPU reads it, here or on another thread. */
  override stageIn(entry: UringEntry, handOver: boolean): Promise<void> | null {
    if (entry.pages !== "in") return super.stageIn(entry, handOver);
    return stagePagesIn(this.c, entry, uringPayloadSize(entry.header, entry.headerOffset), 0);
  }

  /** A zero-copy READ's reply made by the FileSystem goes from the staging slot into the pages. */
  override stageOut(entry: UringEntry, length: number): Promise<boolean> | null {
    return stagePagesOut(this.c, entry, length);
  }

  /** A handed-over reply for the client's pages is staged out; others as in `bufpool`. */
  override handBack(entry: UringEntry, length: number): Promise<boolean> | null {
    return entry.pages === "out" ? this.stageOut(entry, length) : super.handBack(entry, length);
  }
}
