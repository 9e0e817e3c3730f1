/**
 * Pinned, page-aligned memory that the kernel may keep pointers to.
 *
 * GC-managed buffers can move or be freed while the kernel still holds their
 * address (registered buffers, ring entries, iovecs). A {@linkcode PinnedRegion}
 * is plain `mmap`ed memory, locked with `mlock` so that fixed-buffer I/O never
 * faults, and lives until {@linkcode PinnedRegion.close}.
 *
 * @module
 */

import { errno, libc } from "./libc.ts";
import { SystemError } from "./errno.ts";

/** The page size of every Linux platform Deno runs on. */
export const PAGE_SIZE = 4096;

const PROT_READ = 1;
const PROT_WRITE = 2;
const MAP_SHARED = 0x01;
const MAP_PRIVATE = 0x02;
const MAP_ANONYMOUS = 0x20;
const MAP_POPULATE = 0x8000;
const MFD_CLOEXEC = 1;
const MAP_FAILED = 0xffffffffffffffffn;

/** Round `n` up to a multiple of `align` (a power of two). */
export function alignUp(n: number, align: number): number {
  return Math.ceil(n / align) * align;
}

/** A page-aligned, locked, zero-filled memory region outside the JS heap. */
export class PinnedRegion {
  /** The region's start address. */
  readonly pointer: Deno.PointerObject;
  /** Its address as a number, for pointer arithmetic. */
  readonly address: bigint;
  /** Its size in bytes: the requested size rounded up to whole pages. */
  readonly size: number;
  /** Whether `mlock` succeeded (it can fail under a low RLIMIT_MEMLOCK). */
  readonly locked: boolean;
  /** A byte view of the whole region. Invalid after {@linkcode close}. */
  readonly bytes: Uint8Array<ArrayBuffer>;
  /** A DataView of the whole region. Invalid after {@linkcode close}. */
  readonly view: DataView<ArrayBuffer>;
  /**
   * With `shared`, the memfd the region maps (its pages are that file's page
   * cache, so io_uring can read and write them by fd as well); else -1.
   */
  readonly fd: number;
  #open = true;

  /**
   * Map and lock `size` bytes (rounded up to pages). `shared` maps a new
   * memfd instead of anonymous memory. `lazy` neither populates nor locks:
   * pages cost memory only once touched (memory no fixed-buffer table pins:
   * /dev/fuse slots that read(2) and write(2) copy through, staging slots
   * used only sometimes). Throws on failure.
   */
  constructor(size: number, options: { shared?: boolean; lazy?: boolean } = {}) {
    if (!(size > 0)) throw new RangeError(`PinnedRegion size ${size}`);
    this.size = alignUp(size, PAGE_SIZE);
    this.fd = -1;
    if (options.shared) {
      const fd = libc.memfd_create(new TextEncoder().encode("denofuse\0"), MFD_CLOEXEC);
      if (fd < 0) throw new SystemError("memfd_create", errno());
      if (libc.ftruncate(fd, BigInt(this.size)) < 0) {
        const e = errno();
        libc.close(fd);
        throw new SystemError("ftruncate", e, "memfd");
      }
      this.fd = fd;
    }
    const ptr = libc.mmap(
      null,
      BigInt(this.size),
      PROT_READ | PROT_WRITE,
      (this.fd >= 0 ? MAP_SHARED : MAP_PRIVATE | MAP_ANONYMOUS) |
        (options.lazy ? 0 : MAP_POPULATE),
      this.fd,
      0n,
    );
    const address = ptr === null ? 0n : Deno.UnsafePointer.value(ptr);
    if (ptr === null || BigInt(address) === MAP_FAILED) {
      const e = errno();
      if (this.fd >= 0) libc.close(this.fd);
      throw new SystemError("mmap", e, `${this.size} bytes`);
    }
    this.pointer = ptr;
    this.address = BigInt(address);
    this.locked = !options.lazy && libc.mlock(ptr, BigInt(this.size)) === 0;
    const buffer = Deno.UnsafePointerView.getArrayBuffer(ptr, this.size);
    this.bytes = new Uint8Array(buffer);
    this.view = new DataView(buffer);
  }

  /** A pointer `offset` bytes into the region. */
  at(offset: number): Deno.PointerObject {
    return Deno.UnsafePointer.offset(this.pointer, offset)!;
  }

  /** A byte view of `length` bytes at `offset`. */
  subarray(offset: number, length: number): Uint8Array<ArrayBuffer> {
    return this.bytes.subarray(offset, offset + length);
  }

  /** Unlock and unmap. Views taken from the region must not be used after. */
  close(): void {
    if (!this.#open) return;
    this.#open = false;
    if (this.locked) libc.munlock(this.pointer, BigInt(this.size));
    libc.munmap(this.pointer, BigInt(this.size));
    if (this.fd >= 0) libc.close(this.fd);
  }
}
