/**
 * Whether this kernel has FUSE-over-io_uring buffer pools and zero-copy
 * (Linux 7.3+, FUSE 7.46), asked of the kernel itself: only a FUSE
 * connection can tell, so this mounts a throwaway one on a fresh directory,
 * reads the flags its INIT offers (FUSE_HAS_IO_URING_BUFPOOL), agrees to
 * io_uring, asks for a zero-copy queue (ADD_QUEUE with
 * FUSE_URING_ZERO_COPY: 0, or EPERM without CAP_SYS_ADMIN), and unmounts.
 * A kernel version is never the answer.
 *
 * @module
 */

import { AT, cstr, errno, libc } from "../ffi/libc.ts";
import { errnoName } from "../ffi/errno.ts";
import { PinnedRegion } from "../ffi/memory.ts";
import { Ring } from "../ffi/ring.ts";
import { FUSE_URING_POOL_ZERO_COPY, InHeader, InitFlag, Opcode, OutHeader } from "../ops/abi.ts";
import { decodeInitIn, negotiate } from "../ops/init.ts";
import {
  canMount,
  closeFuseDevice,
  mountFuse,
  openFuseDevice,
  unmountFuse,
} from "./mount/mount.ts";
import { prepAddQueue } from "./uring/commands.ts";
import { uringUnavailable } from "./uring/transport.ts";

/** What the kernel said of buffer pools. */
export interface BufferPoolProbe {
  /** It offered buffer pools at INIT; null when no connection could be made to ask. */
  pools: boolean | null;
  /** It made a zero-copy queue; null when not asked (no pools, or none to ask). */
  zeroCopy: boolean | null;
  /** What was seen of pools, or why it could not be asked. */
  detail: string;
  /** What was seen of zero-copy, or why it was not asked. */
  zeroCopyDetail: string;
}

/** Ask a throwaway FUSE connection whether this kernel has buffer pools and zero-copy. */
export function probeBufferPools(): BufferPoolProbe {
  const off = uringUnavailable();
  if (off) return unknown(off);
  if (!canMount()) {
    return unknown(
      "asking needs a throwaway mount, so CAP_SYS_ADMIN (root); a mount's queues find out at INIT",
    );
  }
  // With libc, not Deno's fs API: `--probe` runs with --allow-ffi alone.
  const dir = `/tmp/denofuse-probe-${libc.getpid()}-${crypto.randomUUID().slice(0, 8)}`;
  if (libc.mkdirat(AT.FDCWD, cstr(dir), 0o700) < 0) {
    return unknown(`probe mount: mkdir ${dir}: ${errnoName(errno())}`);
  }
  let fd = -1;
  let mounted = false;
  try {
    fd = openFuseDevice();
    mountFuse(fd, dir, { fsname: "denofuse-probe", subtype: "denofuse-probe" });
    mounted = true;
    return askConnection(fd);
  } catch (e) {
    return unknown(`probe mount: ${(e as Error).message}`);
  } finally {
    if (mounted) unmountFuse(dir);
    if (fd >= 0) closeFuseDevice(fd);
    libc.unlinkat(AT.FDCWD, cstr(dir), AT.REMOVEDIR);
  }
}

/** Neither could be asked, because of `why`. */
function unknown(why: string): BufferPoolProbe {
  return { pools: null, zeroCopy: null, detail: why, zeroCopyDetail: why };
}

/** Read INIT on `fd`, agree to io_uring, and try ADD_QUEUE with zero-copy. */
function askConnection(fd: number): BufferPoolProbe {
  const buffer = new PinnedRegion((1 << 20) + 8192);
  try {
    // The kernel queued INIT during mount(2): this read does not wait.
    const n = libc.read(fd, buffer.pointer, BigInt(buffer.size));
    if (n < 0) throw new Error(`reading INIT: ${errnoName(errno())}`);
    const h = buffer.view;
    if (h.getUint32(InHeader.opcode, true) !== Opcode.INIT) throw new Error("no INIT");
    const k = decodeInitIn(h, InHeader.SIZE, n - InHeader.SIZE);
    if ((k.flags & InitFlag.HAS_IO_URING_BUFPOOL) === 0n) {
      return {
        pools: false,
        zeroCopy: null,
        detail: `the kernel (FUSE ${k.major}.${k.minor}) did not offer FUSE_HAS_IO_URING_BUFPOOL ` +
          "at INIT (buffer pools: Linux 7.3+, FUSE 7.46)",
        zeroCopyDetail: "needs FUSE buffer pools",
      };
    }
    const r = negotiate(k, { ioUring: true });
    if (r.kind !== "ready") throw new Error("INIT could not be agreed");
    const unique = h.getBigUint64(InHeader.unique, true);
    h.setUint32(OutHeader.len, OutHeader.SIZE + r.reply.length, true);
    h.setInt32(OutHeader.error, 0, true);
    h.setBigUint64(OutHeader.unique, unique, true);
    buffer.bytes.set(r.reply, OutHeader.SIZE);
    if (libc.write(fd, buffer.pointer, BigInt(OutHeader.SIZE + r.reply.length)) < 0) {
      throw new Error(`replying to INIT: ${errnoName(errno())}`);
    }
    const seen = `FUSE ${k.major}.${k.minor} offered FUSE_HAS_IO_URING_BUFPOOL at INIT`;
    const ring = new Ring({ entries: 8 });
    let res: number;
    try {
      res = ring.runNow(() => prepAddQueue(ring, fd, 0, FUSE_URING_POOL_ZERO_COPY));
    } finally {
      ring.close();
    }
    const zc = res === 0
      ? "ADD_QUEUE made a zero-copy queue"
      : `ADD_QUEUE with FUSE_URING_ZERO_COPY: ${errnoName(-res)}` +
        (res === -1 ? " (needs CAP_SYS_ADMIN)" : "");
    return { pools: true, zeroCopy: res === 0, detail: seen, zeroCopyDetail: zc };
  } finally {
    buffer.close();
  }
}
