/**
 * Every io_uring mode, by name, with what the rest of the session must
 * know of it before a transport exists: the one place a new mode is listed.
 *
 * @module
 */

import { BufRingMode } from "./buf_ring.ts";
import { MainlineMode } from "./mainline.ts";
import type { ModeContext, PayloadMode, UringMode } from "./mode.ts";
import { ZeroCopyMode } from "./zero_copy.ts";

export type { ModeContext, PayloadMode, UringMode } from "./mode.ts";

/** A mode as the session plans for it. */
export interface ModeSpec {
  /** The kernel pins buffer group 0 of the ring a queue registers on: a ring per queue. */
  readonly ringPerQueue: boolean;
  /** The entries' own slots must be a memfd's pages (io_uring moves them by fd). */
  readonly slotsInMemfd: boolean;
  /** What the pinned entry memory holds (for `-d`). */
  readonly memory: string;
  /** The mode over a transport's context. */
  make(c: ModeContext): PayloadMode;
}

/** The modes. */
export const PAYLOAD_MODES: Record<UringMode, ModeSpec> = {
  mainline: {
    ringPerQueue: false,
    slotsInMemfd: false,
    memory: "payloads in the fixed-buffer table",
    make: (c) => new MainlineMode(c),
  },
  buf_ring: {
    ringPerQueue: true,
    slotsInMemfd: false,
    memory: "headers as a fixed buffer; payloads in kernel-managed buffers, staged here only " +
      "when handed over",
    make: (c) => new BufRingMode(c),
  },
  zero_copy: {
    ringPerQueue: true,
    slotsInMemfd: true,
    memory: "headers as a fixed buffer; payloads in kernel-managed buffers or the client's " +
      "pages; staging slots in a memfd",
    make: (c) => new ZeroCopyMode(c),
  },
};
