/**
 * A kernel-managed buffer ring (the FUSE buffer-ring series; not mainline):
 * the kernel allocates `entries` buffers of `bufferSize` bytes for a buffer
 * group of one io_uring, hands them out itself (a completion names the
 * buffer it used by id), and takes them back itself. The server maps them
 * to read what the kernel put there and write what it should take back.
 *
 * @module
 */

import { SystemError } from "./errno.ts";
import { errno, libc } from "./libc.ts";
import { liburing } from "./liburing.ts";
import { PinnedRegion } from "./memory.ts";
import type { Ring } from "./ring.ts";
import {
  IORING_OFF_KMBUF_RING,
  IORING_OFF_KMBUF_SHIFT,
  IORING_REGISTER_KMBUF_RING,
  IORING_UNREGISTER_KMBUF_RING,
  IoUringBufReg,
} from "./uring_abi.ts";

const PROT_RW = 3;
const MAP_SHARED = 1;
const MAP_FAILED = 0xffffffffffffffffn;

/** The buffers of one kernel-managed buffer group, registered on a ring and mapped. */
export class KernelBufferRing {
  /** Address of buffer 0; buffer `id` is `bufferSize × id` further. */
  readonly address: bigint;
  /** A view of every buffer. */
  readonly view: DataView<ArrayBuffer>;
  /** Byte view of {@linkcode view}. */
  readonly bytes: Uint8Array<ArrayBuffer>;
  #ring: Ring;
  #pointer: Deno.PointerObject;
  /** Every buffer's address, made once (no bigint arithmetic per request). */
  #addresses: bigint[];
  #open = true;

  /**
   * Register `entries` (a power of two) buffers of `bufferSize` bytes (a
   * multiple of the page size) as group `bgid` of `ring`, and map them.
   * Throws a SystemError naming the step the kernel refused.
   */
  constructor(
    ring: Ring,
    readonly bufferSize: number,
    readonly entries: number,
    readonly bgid: number,
  ) {
    this.#ring = ring;
    const ret = this.#register(IORING_REGISTER_KMBUF_RING);
    if (ret < 0) {
      throw new SystemError(
        `IORING_REGISTER_KMBUF_RING (${IORING_REGISTER_KMBUF_RING})`,
        -ret,
        `${entries} x ${bufferSize} bytes, group ${bgid}`,
      );
    }
    const size = BigInt(entries * bufferSize);
    const offset = IORING_OFF_KMBUF_RING | (BigInt(bgid) << IORING_OFF_KMBUF_SHIFT);
    const ptr = libc.mmap(null, size, PROT_RW, MAP_SHARED, ring.fd, offset);
    if (ptr === null || BigInt(Deno.UnsafePointer.value(ptr)) === MAP_FAILED) {
      const e = errno();
      this.#register(IORING_UNREGISTER_KMBUF_RING);
      throw new SystemError("mmap of the kernel-managed buffers", e, `group ${bgid}`);
    }
    this.#pointer = ptr;
    this.address = BigInt(Deno.UnsafePointer.value(ptr));
    this.#addresses = Array.from(
      { length: entries },
      (_, id) => this.address + BigInt(id * bufferSize),
    );
    const buffer = Deno.UnsafePointerView.getArrayBuffer(ptr, entries * bufferSize);
    this.view = new DataView(buffer);
    this.bytes = new Uint8Array(buffer);
  }

  /** Offset of buffer `id` in {@linkcode view}. */
  offsetOf(id: number): number {
    return id * this.bufferSize;
  }

  /** Address of buffer `id`. */
  addressOf(id: number): bigint {
    return this.#addresses[id];
  }

  /** Unmap, and unregister unless the ring is already gone. */
  close(ringOpen = true): void {
    if (!this.#open) return;
    this.#open = false;
    libc.munmap(this.#pointer, BigInt(this.entries * this.bufferSize));
    if (ringOpen) this.#register(IORING_UNREGISTER_KMBUF_RING);
  }

  #register(opcode: number): number {
    const reg = new PinnedRegion(IoUringBufReg.SIZE);
    try {
      reg.view.setUint32(IoUringBufReg.buf_size, this.bufferSize, true);
      reg.view.setUint32(IoUringBufReg.ring_entries, this.entries, true);
      reg.view.setUint16(IoUringBufReg.bgid, this.bgid, true);
      return liburing().io_uring_register(this.#ring.fd, opcode, reg.pointer, 1);
    } finally {
      reg.close();
    }
  }
}

/**
 * Whether this kernel has kernel-managed buffer rings: null if a
 * one-buffer ring registers and maps on `ring`, else why not.
 */
export function kernelBufferRingsMissing(ring: Ring): string | null {
  try {
    new KernelBufferRing(ring, 4096, 1, 0).close();
    return null;
  } catch (e) {
    const err = e as SystemError;
    if (err.syscall.startsWith("mmap")) {
      return `opcode ${IORING_REGISTER_KMBUF_RING} was accepted but no kernel-managed buffers ` +
        "map: it means something else on this kernel";
    }
    return `IORING_REGISTER_KMBUF_RING (${IORING_REGISTER_KMBUF_RING}): ${err.code}: ` +
      "this kernel does not carry the FUSE buffer-ring series (mainline does not)";
  }
}
