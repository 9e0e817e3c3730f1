/**
 * The zero-copy mode (the seeds' series, CAP_SYS_ADMIN): as `buf_ring`, but
 * the kernel also installs the client's own pages of a READ or WRITE (and
 * READDIR, READLINK) in fixed-buffer slot = entry, the headers moving to
 * index `depth`. READ and WRITE of a backing fd are READ_FIXED /
 * WRITE_FIXED on that slot, and the server never touches those pages. Data
 * a FileSystem makes or reads itself goes through the entry's staging
 * slot, a memfd page, and READ_FIXED / WRITE_FIXED between that memfd and
 * the pages.
 *
 * @module
 */

import {
  FUSE_URING_BUF_RING,
  FUSE_URING_ZERO_COPY,
  InHeader,
  NotifyRetrieveIn,
  Opcode,
} from "../../../ops/abi.ts";
import { uringPayloadSize } from "../commands.ts";
import type { UringEntry } from "../entry.ts";
import { BufRingMode } from "./buf_ring.ts";
import type { ModeContext, UringMode } from "./mode.ts";
import { stagePagesIn, stagePagesOut, transferPages } from "./pages.ts";

/** Opcodes whose reply data the kernel passes as the client's pages. */
const PAGES_OUT = new Set<number>([
  Opcode.READ,
  Opcode.READDIR,
  Opcode.READDIRPLUS,
  Opcode.READLINK,
]);

/** The client's pages as fixed buffers; what the CPU must touch staged in a memfd. */
export class ZeroCopyMode extends BufRingMode {
  /** See {@linkcode PayloadMode.name}. */
  override readonly name: UringMode = "zero_copy";

  /** A mode over `c`, whose own slots must be a memfd's pages. */
  constructor(c: ModeContext) {
    super(c);
    if (c.memory.payloadsFd < 0) {
      throw new RangeError("zero_copy needs its staging slots in a memfd");
    }
  }

  protected override get registerFlags(): number {
    return FUSE_URING_BUF_RING | FUSE_URING_ZERO_COPY;
  }

  /** The first `depth` slots take the client's pages; the headers follow. */
  protected override get headerSlot(): number {
    return this.c.depth;
  }

  protected override pagesOf(opcode: number): "in" | "out" | null {
    if (PAGES_OUT.has(opcode)) return "out";
    return opcode === Opcode.WRITE || opcode === Opcode.NOTIFY_REPLY ? "in" : null;
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

  /**
   * The client's pages of a WRITE go through WRITE_FIXED into the memfd at
   * the entry's own slot before the CPU reads them, here or on another thread.
   */
  override stageIn(entry: UringEntry, handOver: boolean): Promise<void> | null {
    if (entry.pages !== "in") return super.stageIn(entry, handOver);
    const c = this.c;
    const size = uringPayloadSize(entry.header, entry.headerOffset);
    // A NOTIFY_REPLY's argument is in the kernel buffer, its data in the
    // pages; put them together, as a mainline payload has them.
    const opcode = entry.header.getUint32(entry.headerOffset + InHeader.opcode, true);
    const lead = opcode === Opcode.NOTIFY_REPLY ? Math.min(NotifyRetrieveIn.SIZE, size) : 0;
    if (lead > 0) {
      const from = entry.dataOffset;
      c.ownBytes.set(entry.data.subarray(from, from + lead), entry.ownOffset);
    }
    return stagePagesIn(c, entry, size, lead);
  }

  /**
   * Data the FileSystem wrote into the staging slot goes into the client's
   * pages with READ_FIXED from the memfd (unless a backing-fd read put it
   * there already).
   */
  override stageOut(entry: UringEntry, length: number): Promise<boolean> | null {
    return stagePagesOut(this.c, entry, length);
  }

  /** A handed-over reply for the client's pages is staged out; others as in `buf_ring`. */
  override handBack(entry: UringEntry, length: number): Promise<boolean> | null {
    return entry.pages === "out" ? this.stageOut(entry, length) : super.handBack(entry, length);
  }
}
