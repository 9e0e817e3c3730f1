/**
 * The first phase of mounting: from the options and what this machine and
 * process offer, decide everything that must be fixed before the kernel
 * sees the mount. Once FUSE_INIT agrees to FUSE-over-io_uring, the kernel
 * holds every request until the queues are registered, so the transport,
 * the queue depth and the modes to try are chosen here, not after.
 *
 * {@linkcode planTransport} is pure: it reads only its arguments, so its
 * fallback rules are tested with made-up {@linkcode MachineProbes} and no
 * root (`tests/unit/plan_test.ts`). {@linkcode probeMachine} finds the real
 * ones.
 *
 * @module
 */

import { libc } from "../ffi/libc.ts";
import { DEFAULT_MAX_WRITE, MAX_PAGES } from "../ops/init.ts";
import { canMount, MountError } from "./mount/mount.ts";
import { bufferRingMissing } from "./probe.ts";
import { DEFAULT_QUEUE_DEPTH, planQueueDepth } from "./uring/locked_memory.ts";
import type { UringMode } from "./uring/modes/mode.ts";
import { MODE_NAMES, PAYLOAD_MODES } from "./uring/modes/modes.ts";
import { probeBufferPools } from "./pool_probe.ts";
import { possibleCpus, uringUnavailable } from "./uring/transport.ts";

/** Why a throwaway connection says this kernel has no buffer pools, or null. */
function bufferPoolMissing(): string | null {
  const p = probeBufferPools();
  return p.pools === true ? null : p.detail;
}

/** Which transport serves requests. */
export type TransportChoice = "auto" | "dev" | "io_uring";

/** The options the plan reads (a subset of `MountOptions`). */
export interface PlanOptions {
  /** See `MountOptions.transport`. */
  transport?: TransportChoice;
  /** See `MountOptions.queueDepth`. */
  queueDepth?: number;
  /** See `MountOptions.uringMode`. */
  uringMode?: "auto" | UringMode;
  /** See `MountOptions.threads`. */
  threads?: number;
  /** See `MountOptions.backingIo`. */
  backingIo?: "ring" | "direct";
  /** See `MountOptions.fusermount`. */
  fusermount?: boolean;
  /** See `MountOptions.autoUnmount`. */
  autoUnmount?: boolean;
  /** See `MountOptions.passthrough`. */
  passthrough?: boolean;
  /** See `MountOptions.maxWrite`. */
  maxWrite?: number;
  /** See `MountOptions.maxRead`. */
  maxRead?: number;
}

/** What the plan needs to know of this machine and process. */
export interface MachineProbes {
  /** Why FUSE-over-io_uring cannot be used, or null when it can. */
  uringUnavailable: string | null;
  /** The kernel's queues: one per possible CPU. */
  cpus: number;
  /**
   * io_uring entries per queue that fit RLIMIT_MEMLOCK (fewer than asked
   * when only fewer fit and none was asked for), or why none fit.
   */
  queueDepth: number | string;
  /** Why the kernel has no FUSE buffer rings (the seeds' modes), or null. */
  bufferRingMissing: string | null;
  /**
   * Why the kernel has no FUSE buffer pools (Linux 7.3+), or null when it
   * has them or is not asked before mounting: then the queues find out from
   * INIT, and a pool mode the kernel lacks is passed over.
   */
  bufferPoolMissing: string | null;
  /** Running as root (zero-copy needs CAP_SYS_ADMIN). */
  root: boolean;
  /** Root or CAP_SYS_ADMIN: may call mount(2) and use kernel passthrough. */
  canMount: boolean;
}

/** What was decided before mounting. */
export interface TransportPlan {
  /** The transport to ask the kernel for at INIT. */
  transport: "io_uring" | "dev";
  /** Why not io_uring, when not. */
  fallbackReason: string | null;
  /** io_uring entries per queue. */
  queueDepth: number;
  /** io_uring modes to try, best first (empty for /dev/fuse). */
  modes: UringMode[];
  /** Serving threads besides the session's own loop (1: none). */
  threads: number;
  /** Who mounts: this process with mount(2), or fusermount3 for it. */
  mountedBy: "mount" | "fusermount3";
  /** Ask the kernel for FUSE_PASSTHROUGH. */
  passthrough: boolean;
  /** Things the user should be told (a fallback asked for by an option). */
  notices: string[];
  /** Things `-d` shows. */
  debug: string[];
}

const TRANSPORTS = ["auto", "dev", "io_uring"];
const BACKING_IO = ["ring", "direct"];
const MODES = ["auto", ...MODE_NAMES];

/** Bytes of one io_uring entry's payload slot for these options. */
export function uringSlotSize(o: PlanOptions): number {
  return Math.max(
    o.maxWrite ?? DEFAULT_MAX_WRITE,
    o.maxRead ?? DEFAULT_MAX_WRITE,
    MAX_PAGES * 4096,
  );
}

/** Throw a {@linkcode MountError} for an option value no plan can take. */
export function checkPlanOptions(o: PlanOptions): void {
  const bad = (name: string, value: unknown, allowed: string[]) =>
    new MountError(
      `unknown ${name} ${JSON.stringify(value)}: use ${allowed.slice(0, -1).join(", ")} or ` +
        allowed.at(-1),
    );
  if (!TRANSPORTS.includes(o.transport ?? "auto")) throw bad("transport", o.transport, TRANSPORTS);
  if (!BACKING_IO.includes(o.backingIo ?? "ring")) throw bad("backingIo", o.backingIo, BACKING_IO);
  if (!MODES.includes(o.uringMode ?? "auto")) throw bad("io_uring mode", o.uringMode, MODES);
  if (o.autoUnmount && o.fusermount === false) {
    throw new MountError(
      "autoUnmount works through fusermount3: it cannot go with fusermount: false",
    );
  }
}

/** Why `mode` cannot be had here, or null if it may be. */
function modeMissing(mode: UringMode, p: MachineProbes): string | null {
  const spec = PAYLOAD_MODES[mode];
  if (spec.admin && !p.root) return "zero-copy needs CAP_SYS_ADMIN (root)";
  if (spec.kernel === "buf_ring") return p.bufferRingMissing;
  if (spec.kernel === "bufpool") return p.bufferPoolMissing;
  return null;
}

/**
 * The io_uring modes to try, best first: a named mode alone (a MountError
 * if this kernel or process cannot have it), or for `auto` every mode they
 * may have, from buffer pools with zero-copy down to mainline.
 */
function uringModes(asked: "auto" | UringMode, p: MachineProbes, debug: string[]): UringMode[] {
  if (asked !== "auto") {
    const missing = modeMissing(asked, p);
    if (missing) throw new MountError(`io_uring ${asked} mode: ${missing}`);
    return [asked];
  }
  return MODE_NAMES.filter((mode) => {
    const missing = modeMissing(mode, p);
    if (missing) debug.push(`io_uring: not ${mode}: ${missing}`);
    return missing === null;
  });
}

/**
 * Decide the transport, the io_uring depth and modes, who mounts, and
 * whether to ask for kernel passthrough. Throws a {@linkcode MountError}
 * for an unknown option value, or when `transport: "io_uring"` (or a named
 * mode) cannot be had.
 */
export function planTransport(o: PlanOptions, p: MachineProbes): TransportPlan {
  checkPlanOptions(o);
  const choice = o.transport ?? "auto";
  const notices: string[] = [];
  const debug: string[] = [];
  let fallbackReason = choice === "dev" ? "the dev transport was asked for" : p.uringUnavailable;
  let queueDepth = o.queueDepth ?? DEFAULT_QUEUE_DEPTH;
  if (fallbackReason === null) {
    if (typeof p.queueDepth === "string") fallbackReason = p.queueDepth;
    else if (p.queueDepth < queueDepth) {
      debug.push(`io_uring: ${p.queueDepth} entries per queue, to fit RLIMIT_MEMLOCK`);
      queueDepth = p.queueDepth;
    }
  }
  if (fallbackReason !== null && choice === "io_uring") {
    throw new MountError(`io_uring transport: ${fallbackReason}`);
  }
  const transport = fallbackReason === null ? "io_uring" : "dev";
  const modes = transport === "io_uring" ? uringModes(o.uringMode ?? "auto", p, debug) : [];
  const passthrough = o.passthrough === true && p.canMount;
  if (o.passthrough && !passthrough) {
    notices.push(
      "kernel passthrough needs CAP_SYS_ADMIN (root): serving file data from the server",
    );
  }
  return {
    transport,
    fallbackReason,
    queueDepth,
    modes,
    threads: o.threads ?? p.cpus,
    mountedBy: (o.fusermount ?? (o.autoUnmount || !p.canMount)) ? "fusermount3" : "mount",
    passthrough,
    notices,
    debug,
  };
}

/**
 * Probe what {@linkcode planTransport} needs for options `o`; only what
 * they can use (no memory budget without io_uring, no buffer-ring probe
 * for the mainline mode). A buffer-pool mode asked for by name is asked of
 * a throwaway connection (`pool_probe.ts`), so that it fails before
 * mounting; `auto` learns of pools at INIT instead.
 */
export async function probeMachine(o: PlanOptions): Promise<MachineProbes> {
  const cpus = possibleCpus();
  const mode = o.uringMode ?? "auto";
  const wantsUring = (o.transport ?? "auto") !== "dev";
  const uring = wantsUring ? uringUnavailable() : "not asked for";
  const usable = wantsUring && uring === null;
  return {
    uringUnavailable: uring,
    cpus,
    queueDepth: usable ? await planQueueDepth(o.queueDepth, cpus, uringSlotSize(o)) : 0,
    bufferRingMissing: usable && ["auto", "buf_ring", "zero_copy"].includes(mode)
      ? bufferRingMissing()
      : "not probed",
    bufferPoolMissing: usable && PAYLOAD_MODES[mode as UringMode]?.kernel === "bufpool"
      ? bufferPoolMissing()
      : null,
    root: libc.geteuid() === 0,
    canMount: canMount(),
  };
}
