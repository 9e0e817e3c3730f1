/**
 * Every io_uring mode, by name, with what the rest of the session must
 * know of it before a transport exists: the one place a new mode is listed.
 *
 * @module
 */

import { EntryMemory } from "../entry_memory.ts";
import { BufPoolMode } from "./bufpool.ts";
import { BufPoolZeroCopyMode } from "./bufpool_zero_copy.ts";
import { BufRingMode } from "./buf_ring.ts";
import { MainlineMode } from "./mainline.ts";
import type { ModeContext, PayloadMode, UringMode } from "./mode.ts";
import { ZeroCopyMode } from "./zero_copy.ts";

export type { ModeContext, PayloadMode, UringMode } from "./mode.ts";

/** A mode as the session plans for it. */
export interface ModeSpec {
  /**
   * What the kernel must have: nothing beyond FUSE-over-io_uring, buffer
   * pools (it says FUSE_HAS_IO_URING_BUFPOOL at INIT: Linux 7.3+), or the
   * seeds' buffer rings (kernel-managed buffer rings, probed on a ring).
   */
  readonly kernel: "uring" | "bufpool" | "buf_ring";
  /** The kernel refuses it without CAP_SYS_ADMIN. */
  readonly admin: boolean;
  /**
   * Opens served from a backing fd say FOPEN_IO_URING_ZERO_COPY, so that
   * their READ and WRITE bring the client's pages (7.3's zero-copy).
   */
  readonly zeroCopyOpens: boolean;
  /** The kernel pins buffer group 0 of the ring a queue registers on: a ring per queue. */
  readonly ringPerQueue: boolean;
  /** The entries' own slots must be a memfd's pages (io_uring moves them by fd). */
  readonly slotsInMemfd: boolean;
  /** Each queue has a buffer pool; the entries' own slots only stage (so are not pinned). */
  readonly bufferPool: boolean;
  /** What the pinned entry memory holds (for `-d`). */
  readonly memory: string;
  /** The mode over a transport's context. */
  make(c: ModeContext): PayloadMode;
}

/** The modes, best first: what `auto` tries, in this order, where the kernel has them. */
export const PAYLOAD_MODES: Record<UringMode, ModeSpec> = {
  bufpool_zero_copy: {
    kernel: "bufpool",
    admin: true,
    zeroCopyOpens: true,
    ringPerQueue: false,
    slotsInMemfd: true,
    bufferPool: true,
    memory: "headers; a buffer pool per queue, as a fixed buffer; the client's pages of " +
      "READ/WRITE in the entries' slots; staging slots in a memfd, touched only when used",
    make: (c) => new BufPoolZeroCopyMode(c),
  },
  bufpool: {
    kernel: "bufpool",
    admin: false,
    zeroCopyOpens: false,
    ringPerQueue: false,
    slotsInMemfd: false,
    bufferPool: true,
    memory: "headers; a buffer pool per queue, as a fixed buffer; staging slots touched only " +
      "when a request is handed over",
    make: (c) => new BufPoolMode(c),
  },
  zero_copy: {
    kernel: "buf_ring",
    admin: true,
    zeroCopyOpens: false,
    ringPerQueue: true,
    slotsInMemfd: true,
    bufferPool: false,
    memory: "headers as a fixed buffer; payloads in kernel-managed buffers or the client's " +
      "pages; staging slots in a memfd",
    make: (c) => new ZeroCopyMode(c),
  },
  buf_ring: {
    kernel: "buf_ring",
    admin: false,
    zeroCopyOpens: false,
    ringPerQueue: true,
    slotsInMemfd: false,
    bufferPool: false,
    memory: "headers as a fixed buffer; payloads in kernel-managed buffers, staged here only " +
      "when handed over",
    make: (c) => new BufRingMode(c),
  },
  mainline: {
    kernel: "uring",
    admin: false,
    zeroCopyOpens: false,
    ringPerQueue: false,
    slotsInMemfd: false,
    bufferPool: false,
    memory: "payloads in the fixed-buffer table",
    make: (c) => new MainlineMode(c),
  },
};

/** Every mode's name, best first. */
export const MODE_NAMES = Object.keys(PAYLOAD_MODES) as UringMode[];

/**
 * The memory of `queues` queues of `depth` entries in `mode`, with
 * `slotSize`-byte payloads and, in the buffer-pool modes, `poolBuffers`
 * buffers per queue.
 */
export function entryMemoryFor(
  mode: UringMode,
  queues: number,
  depth: number,
  slotSize: number,
  poolBuffers: number,
): EntryMemory {
  const spec = PAYLOAD_MODES[mode];
  return new EntryMemory(queues * depth, slotSize, {
    shared: spec.slotsInMemfd,
    lazySlots: spec.bufferPool,
    pool: spec.bufferPool ? { queues, buffers: poolBuffers } : undefined,
  });
}
