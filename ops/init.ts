/**
 * FUSE_INIT negotiation, as a pure function of what the kernel offers and
 * what the session wants, so that it can be tested without a kernel.
 *
 * @module
 */

import {
  FUSE_KERNEL_MINOR_VERSION,
  FUSE_KERNEL_VERSION,
  FUSE_MIN_MINOR_VERSION,
  InitFlag,
  InitIn,
  InitOut,
} from "./abi.ts";

/** What the kernel sent in `fuse_init_in`. */
export interface KernelInit {
  /** Protocol major version. */
  major: number;
  /** Protocol minor version. */
  minor: number;
  /** The kernel's readahead limit. */
  maxReadahead: number;
  /** All 64 offered flags (`flags | flags2 << 32`). */
  flags: bigint;
}

/** What the session asks for; every field has a default. */
export interface InitOptions {
  /** Largest write the kernel may send, in bytes (default 1 MiB). */
  maxWrite?: number;
  /** Largest read the kernel may ask for, in bytes (default 1 MiB). */
  maxRead?: number;
  /** Kernel readahead cap in bytes (default: what the kernel offers). */
  maxReadahead?: number;
  /** Background request limit (0: the kernel's default). */
  maxBackground?: number;
  /** Cache writes in the kernel (FUSE_WRITEBACK_CACHE; default off). */
  writebackCache?: boolean;
  /** Let the kernel send O_TRUNC to open (FUSE_ATOMIC_O_TRUNC; default off). */
  atomicOTrunc?: boolean;
  /** Cache symlink targets (FUSE_CACHE_SYMLINKS; default off). */
  cacheSymlinks?: boolean;
  /** Ask for FUSE-over-io_uring (FUSE_OVER_IO_URING; default off). */
  ioUring?: boolean;
  /** The file system implements readdirplus. */
  readdirplus?: boolean;
  /** The file system implements POSIX locks (getlk/setlk). */
  posixLocks?: boolean;
  /** The file system implements BSD flock. */
  flockLocks?: boolean;
  /**
   * The file system clears setuid/setgid itself where the kernel asks
   * (FUSE_HANDLE_KILLPRIV_V2): `SetAttr.killSuidgid`, and
   * `RequestContext.killSuidgid` on open, create and write; for handles
   * with a `backingFd` the session does it on writes. The kernel then no
   * longer asks for `security.capability` before every write.
   */
  handleKillpriv?: boolean;
  /**
   * Kernel passthrough (FUSE_PASSTHROUGH, Linux 6.9+): an open answered with
   * a whole-file `backingFd` is handed to the kernel, which moves its data
   * itself. Needs CAP_SYS_ADMIN; the kernel will not combine it with
   * `writebackCache`, which it then replaces (default off). Files with
   * setuid or setgid bits stay with the server: see ops/backing_ids.ts.
   */
  passthrough?: boolean;
}

/** The outcome of negotiation. */
export type InitResult =
  | {
    /** Reply with this `fuse_init_out`; the connection is ready. */
    kind: "ready";
    /** Negotiated minor version. */
    minor: number;
    /** Flags both sides enabled. */
    flags: bigint;
    /** Negotiated max write. */
    maxWrite: number;
    /** Negotiated max read (the reply size the kernel may ask for). */
    maxRead: number;
    /** The encoded `fuse_init_out` (size depends on the minor version). */
    reply: Uint8Array;
  }
  | {
    /** The kernel speaks a newer major: reply with ours and await a new INIT. */
    kind: "retry";
    /** The encoded short reply. */
    reply: Uint8Array;
  }
  | {
    /** Refuse: the kernel is too old. */
    kind: "refuse";
    /** Why, for the user. */
    reason: string;
  };

/** The largest request size the kernel supports (256 pages of 4 KiB). */
export const MAX_PAGES = 256;
const PAGE = 4096;
/** Default max_write and max_read: 1 MiB, the kernel's ceiling. */
export const DEFAULT_MAX_WRITE = MAX_PAGES * PAGE;

/** Decode `fuse_init_in` from `view` at `o` (`length` bytes present). */
export function decodeInitIn(
  view: DataView,
  o: number,
  length: number,
): KernelInit {
  const flags = BigInt(view.getUint32(o + InitIn.flags, true));
  const flags2 = length >= InitIn.SIZE && (flags & InitFlag.INIT_EXT)
    ? BigInt(view.getUint32(o + InitIn.flags2, true))
    : 0n;
  return {
    major: view.getUint32(o + InitIn.major, true),
    minor: view.getUint32(o + InitIn.minor, true),
    maxReadahead: view.getUint32(o + InitIn.max_readahead, true),
    flags: flags | (flags2 << 32n),
  };
}

/** Negotiate INIT: pick the version, flags and sizes, and encode the reply. */
export function negotiate(k: KernelInit, o: InitOptions = {}): InitResult {
  if (k.major > FUSE_KERNEL_VERSION) {
    const reply = new Uint8Array(8);
    const v = new DataView(reply.buffer);
    v.setUint32(InitOut.major, FUSE_KERNEL_VERSION, true);
    v.setUint32(InitOut.minor, FUSE_KERNEL_MINOR_VERSION, true);
    return { kind: "retry", reply };
  }
  if (k.major < FUSE_KERNEL_VERSION || k.minor < FUSE_MIN_MINOR_VERSION) {
    return {
      kind: "refuse",
      reason: `kernel FUSE protocol ${k.major}.${k.minor} is older than ` +
        `${FUSE_KERNEL_VERSION}.${FUSE_MIN_MINOR_VERSION}, the oldest supported`,
    };
  }
  const minor = Math.min(k.minor, FUSE_KERNEL_MINOR_VERSION);
  const maxWrite = Math.min(o.maxWrite ?? DEFAULT_MAX_WRITE, DEFAULT_MAX_WRITE);
  const maxRead = Math.min(o.maxRead ?? DEFAULT_MAX_WRITE, DEFAULT_MAX_WRITE);
  const maxPages = Math.min(
    MAX_PAGES,
    Math.ceil(Math.max(maxWrite, maxRead) / PAGE),
  );

  let want = InitFlag.ASYNC_READ | InitFlag.BIG_WRITES | InitFlag.MAX_PAGES |
    InitFlag.PARALLEL_DIROPS | InitFlag.AUTO_INVAL_DATA | InitFlag.ASYNC_DIO |
    InitFlag.ABORT_ERROR | InitFlag.INIT_EXT;
  if (o.readdirplus) {
    want |= InitFlag.DO_READDIRPLUS | InitFlag.READDIRPLUS_AUTO;
  }
  // The kernel leaves passthrough off under a writeback cache: passthrough wins.
  if (o.passthrough) want |= InitFlag.PASSTHROUGH;
  else if (o.writebackCache) want |= InitFlag.WRITEBACK_CACHE;
  if (o.atomicOTrunc) want |= InitFlag.ATOMIC_O_TRUNC;
  if (o.cacheSymlinks) want |= InitFlag.CACHE_SYMLINKS;
  if (o.posixLocks) want |= InitFlag.POSIX_LOCKS;
  if (o.flockLocks) want |= InitFlag.FLOCK_LOCKS;
  if (o.handleKillpriv) want |= InitFlag.HANDLE_KILLPRIV_V2;
  // A 7.46 kernel says it has buffer pools; it never reads the bit back, but
  // keeping it in the agreed flags is how the queues learn it.
  if (o.ioUring) want |= InitFlag.OVER_IO_URING | InitFlag.HAS_IO_URING_BUFPOOL;
  // INIT_EXT is ours to set whenever the kernel knows flags2 (7.36+).
  const flags = want & (k.flags | InitFlag.INIT_EXT) &
    (minor >= 36 ? ~0n : ~InitFlag.INIT_EXT);

  const size = minor >= 23 ? InitOut.SIZE : 24;
  const reply = new Uint8Array(size);
  const v = new DataView(reply.buffer);
  v.setUint32(InitOut.major, FUSE_KERNEL_VERSION, true);
  v.setUint32(InitOut.minor, minor, true);
  v.setUint32(
    InitOut.max_readahead,
    Math.min(o.maxReadahead ?? k.maxReadahead, k.maxReadahead),
    true,
  );
  v.setUint32(InitOut.flags, Number(flags & 0xffffffffn), true);
  v.setUint16(InitOut.max_background, o.maxBackground ?? 0, true);
  v.setUint16(InitOut.congestion_threshold, 0, true);
  v.setUint32(InitOut.max_write, maxWrite, true);
  if (size === InitOut.SIZE) {
    v.setUint32(InitOut.time_gran, 1, true);
    v.setUint16(InitOut.max_pages, maxPages, true);
    v.setUint32(InitOut.flags2, Number(flags >> 32n), true);
    // Backing files are not FUSE files of another mount (stacking depth 1).
    if (flags & InitFlag.PASSTHROUGH) v.setUint32(InitOut.max_stack_depth, 1, true);
  }
  return { kind: "ready", minor, flags, maxWrite, maxRead, reply };
}
