/**
 * What this kernel offers: each feature the transports can use, tried on a
 * throwaway io_uring where it can be, or asked of a throwaway FUSE
 * connection (buffer pools, `pool_probe.ts`), with the reason when it is
 * absent (`--probe` on the command line).
 *
 * The kernel-managed buffer ring of the FUSE buffer-ring and zero-copy
 * series (not in mainline) is registered with opcode 38 on the ported
 * series this project is tested with; the series as posted used 37, which
 * mainline 7.1+ gives to IORING_REGISTER_BPF_FILTER, so 37 is never tried.
 * A registration is believed only if the buffers it promises can also be
 * mapped at the kernel-managed ring offset, so an opcode that means
 * something else on some kernel is not mistaken for it.
 *
 * @module
 */

import { errnoName } from "../ffi/errno.ts";
import { close, readSmallFile } from "../ffi/libc.ts";
import { liburing } from "../ffi/liburing.ts";
import { PinnedRegion } from "../ffi/memory.ts";
import { Ring } from "../ffi/ring.ts";
import { IORING_OP, IORING_REGISTER_KMBUF_RING } from "../ffi/uring_abi.ts";
import { kernelBufferRingsMissing } from "../ffi/kernel_buffer_ring.ts";
import { FUSE_KERNEL_MINOR_VERSION, FUSE_KERNEL_VERSION } from "../ops/abi.ts";
import { canMount, openFuseDevice } from "./mount/mount.ts";
import { probeBufferPools } from "./pool_probe.ts";
import { uringUnavailable } from "./uring/transport.ts";

/** One feature: whether this kernel offers it, and what was seen. */
export interface ProbeLine {
  /** What was looked for. */
  feature: string;
  /** Whether it is there. */
  available: boolean;
  /** What was seen, or why it is absent. */
  detail: string;
}

const IORING_REGISTER_PBUF_RING = 22;
const IORING_UNREGISTER_PBUF_RING = 23;
const IO_URING_OP_SUPPORTED = 1;

/** `struct io_uring_buf_reg` (40 bytes): ring_addr / buf_size, ring_entries, bgid, flags. */
function bufReg(first: bigint, entries: number, bgid: number): PinnedRegion {
  const reg = new PinnedRegion(40);
  reg.view.setBigUint64(0, first, true);
  reg.view.setUint32(8, entries, true);
  reg.view.setUint16(12, bgid, true);
  return reg;
}

function register(ring: Ring, opcode: number, arg: PinnedRegion, n: number): number {
  return liburing().io_uring_register(ring.fd, opcode, arg.pointer, n);
}

/** Which io_uring opcodes the kernel supports (io_uring_get_probe_ring). */
function supportedOps(ring: Ring): Set<number> {
  const ops = new Set<number>();
  const probe = liburing().io_uring_get_probe_ring(ring.pointer);
  if (!probe) return ops;
  try {
    // struct io_uring_probe: last_op u8, ops_len u8, resv..., ops[] of 8 bytes at 16.
    const head = new Deno.UnsafePointerView(probe);
    const count = head.getUint8(1);
    for (let i = 0; i < count; i++) {
      const op = head.getUint8(16 + i * 8);
      if (head.getUint16(16 + i * 8 + 2) & IO_URING_OP_SUPPORTED) ops.add(op);
    }
  } finally {
    liburing().io_uring_free_probe(probe);
  }
  return ops;
}

function kernelRelease(): string {
  try {
    return readSmallFile("/proc/sys/kernel/osrelease").trim();
  } catch {
    return "unknown";
  }
}

/** The features found by a ring, in the order {@linkcode probe} reports them. */
const RING_FEATURES = [
  "fixed buffers (sparse table)",
  "MSG_RING",
  "provided buffer rings",
  "kernel-managed buffer rings",
  "FUSE buffer ring",
  "FUSE zero-copy",
];

/**
 * Probe the running kernel: throwaway rings, and (as root) a throwaway
 * FUSE connection, mounted on a fresh directory and unmounted at once, to
 * ask about buffer pools.
 */
export function probe(): ProbeLine[] {
  const lines = [...fuseLines(), ...poolLines()];
  let ring: Ring;
  try {
    ring = new Ring({ entries: 8 });
  } catch (e) {
    const why = `io_uring cannot be set up: ${(e as Error).message}`;
    for (const feature of ["io_uring", ...RING_FEATURES]) {
      lines.push({ feature, available: false, detail: why });
    }
    return lines;
  }
  try {
    return [...lines, ...ringLines(ring)];
  } finally {
    ring.close();
  }
}

/** What the FUSE device, its io_uring switch and this process's privileges allow. */
function fuseLines(): ProbeLine[] {
  const lines: ProbeLine[] = [];
  const line = (feature: string, available: boolean, detail: string) =>
    lines.push({ feature, available, detail });
  let fuse = false;
  try {
    close(openFuseDevice());
    fuse = true;
    line(
      "FUSE",
      true,
      `/dev/fuse opens; kernel ${kernelRelease()}; this build speaks ` +
        `${FUSE_KERNEL_VERSION}.${FUSE_KERNEL_MINOR_VERSION} (the kernel's own version is agreed at mount)`,
    );
  } catch (e) {
    line("FUSE", false, (e as Error).message);
  }
  const uringOff = uringUnavailable();
  line("FUSE-over-io_uring", fuse && uringOff === null, uringOff ?? "enable_uring=Y");
  // The kernel's side (6.9+, CONFIG_FUSE_PASSTHROUGH) shows only at INIT; the process's, here.
  const admin = canMount();
  line(
    "kernel passthrough",
    fuse && admin,
    admin
      ? "this process may make backing files (CAP_SYS_ADMIN); the kernel offers FUSE_PASSTHROUGH " +
        "at INIT (Linux 6.9+; -d shows it)"
      : "needs CAP_SYS_ADMIN (root): the server moves file data itself",
  );
  return lines;
}

/** What a FUSE connection says of buffer pools and zero-copy (Linux 7.3+). */
function poolLines(): ProbeLine[] {
  const p = probeBufferPools();
  return [
    { feature: "FUSE buffer pools", available: p.pools === true, detail: p.detail },
    {
      feature: "FUSE pool zero-copy",
      available: p.zeroCopy === true,
      detail: p.zeroCopyDetail,
    },
  ];
}

/** What a ring of this kernel supports: the opcodes, buffer tables and rings FUSE uses. */
function ringLines(ring: Ring): ProbeLine[] {
  const lines: ProbeLine[] = [];
  const line = (feature: string, available: boolean, detail: string) =>
    lines.push({ feature, available, detail });
  const ops = supportedOps(ring);
  const needed = [IORING_OP.URING_CMD, IORING_OP.READ_FIXED, IORING_OP.WRITE_FIXED];
  const missing = needed.filter((op) => !ops.has(op));
  line(
    "io_uring",
    missing.length === 0,
    missing.length === 0
      ? "URING_CMD, READ_FIXED and WRITE_FIXED supported"
      : `opcodes ${missing.join(", ")} not supported`,
  );
  line("fixed buffers (sparse table)", ...trySparse(ring));
  const msgRing = ops.has(IORING_OP.MSG_RING);
  line(
    "MSG_RING",
    msgRing,
    msgRing
      ? "queue threads hand requests over without a thread pool"
      : "not supported (needs Linux 5.18+)",
  );
  line("provided buffer rings", ...tryProvided(ring));
  const [kmbuf, kmbufDetail] = tryKernelManaged(ring);
  line("kernel-managed buffer rings", kmbuf, kmbufDetail);
  const fuseSide = "FUSE's side is known only at REGISTER on a mounted connection";
  line(
    "FUSE buffer ring",
    kmbuf,
    kmbuf ? `the ring can hold it; ${fuseSide}` : "needs kernel-managed buffer rings",
  );
  line(
    "FUSE zero-copy",
    kmbuf,
    kmbuf
      ? `needs the FUSE buffer ring and CAP_SYS_ADMIN; ${fuseSide}`
      : "needs the FUSE buffer ring",
  );
  return lines;
}

function trySparse(ring: Ring): [boolean, string] {
  try {
    ring.registerSparseBuffers(4);
    return [true, "READ_FIXED / WRITE_FIXED into registered slots"];
  } catch (e) {
    return [false, (e as Error).message];
  }
}

function tryProvided(ring: Ring): [boolean, string] {
  const bufs = new PinnedRegion(4096); // the ring of 1 entry lives in a page
  const reg = bufReg(bufs.address, 1, 7);
  try {
    const ret = register(ring, IORING_REGISTER_PBUF_RING, reg, 1);
    if (ret < 0) return [false, `IORING_REGISTER_PBUF_RING: ${errnoName(-ret)}`];
    register(ring, IORING_UNREGISTER_PBUF_RING, reg, 1);
    return [true, "IORING_REGISTER_PBUF_RING"];
  } finally {
    reg.close();
    bufs.close();
  }
}

function tryKernelManaged(ring: Ring): [boolean, string] {
  const missing = kernelBufferRingsMissing(ring);
  return missing === null
    ? [true, `IORING_REGISTER_KMBUF_RING (${IORING_REGISTER_KMBUF_RING}), buffers mapped`]
    : [false, missing];
}

/**
 * Why the FUSE buffer-ring modes cannot be had on this kernel (no
 * kernel-managed buffer rings), or null if they may be: FUSE's own side is
 * known only when a queue registers.
 */
export function bufferRingMissing(): string | null {
  let ring: Ring;
  try {
    ring = new Ring({ entries: 8 });
  } catch (e) {
    return `io_uring cannot be set up: ${(e as Error).message}`;
  }
  try {
    return kernelBufferRingsMissing(ring);
  } finally {
    ring.close();
  }
}

/** The probe as lines for a terminal: `yes`/`no`, the feature, and what was seen. */
export function formatProbe(lines: ProbeLine[]): string {
  const width = Math.max(...lines.map((l) => l.feature.length));
  return lines.map((l) => `${l.available ? "yes" : "no "}  ${l.feature.padEnd(width)}  ${l.detail}`)
    .join("\n");
}
