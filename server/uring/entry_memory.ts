/**
 * The pinned memory of a set of io_uring entries, allocated by the
 * session's thread and adopted by the thread that serves them.
 *
 * @module
 */

import { PinnedRegion } from "../../ffi/memory.ts";
import { UringReqHeader } from "../../ops/abi.ts";

/** How an {@linkcode EntryMemory} is laid out. */
export interface EntryMemoryOptions {
  /** The payload slots are a memfd's pages (io_uring moves them by fd). */
  shared?: boolean;
  /**
   * The payload slots are neither populated nor locked: the kernel never
   * reaches them by address, and they are touched only when a request is
   * staged there (the buffer-pool modes).
   */
  lazySlots?: boolean;
  /** A buffer pool of `buffers` payload buffers for each of `queues` queues. */
  pool?: { queues: number; buffers: number };
}

/**
 * The pinned memory of a set of entries: a header buffer and a payload
 * slot of `slotSize` bytes each, and in the buffer-pool modes each queue's
 * pool. In `mainline` mode the slots are the payload buffers the kernel
 * writes into; in the other modes they are where a request is staged when
 * it cannot stay in the kernel's memory (handed to another thread;
 * zero-copy data a FileSystem makes or reads itself), and with `shared`
 * they are a memfd's pages, so that io_uring can move them to and from the
 * client's pages by fd. Held by the session's thread, so that it outlives
 * every thread that uses it (the kernel holds the pools' addresses until
 * the connection ends).
 */
export class EntryMemory {
  /** `n` header buffers. */
  readonly headers: PinnedRegion;
  /** `n` payload slots of `slotSize` bytes. */
  readonly payloads: PinnedRegion;
  /** The queues' pools, one after another, or null. */
  readonly pool: PinnedRegion | null = null;
  /** Bytes of one queue's pool. */
  readonly poolSize: number;
  readonly #lazySlots: boolean;

  /** Map `n` entries with `slotSize`-byte payloads. */
  constructor(readonly n: number, readonly slotSize: number, options: EntryMemoryOptions = {}) {
    this.#lazySlots = options.lazySlots === true;
    this.poolSize = options.pool ? options.pool.buffers * slotSize : 0;
    const regions: PinnedRegion[] = [];
    try {
      regions.push(this.headers = new PinnedRegion(n * UringReqHeader.SIZE));
      regions.push(
        this.payloads = new PinnedRegion(n * slotSize, {
          shared: options.shared,
          lazy: this.#lazySlots,
        }),
      );
      if (options.pool) {
        regions.push(this.pool = new PinnedRegion(options.pool.queues * this.poolSize));
      }
    } catch (e) {
      for (const r of regions) r.close();
      throw e;
    }
  }

  /** Pinned bytes: headers, payload slots (unless lazy), pools. */
  get size(): number {
    return this.headers.size + (this.#lazySlots ? 0 : this.payloads.size) +
      (this.pool?.size ?? 0);
  }

  /** The addresses, for a thread that adopts this memory. */
  get addresses(): EntryAddresses {
    return {
      n: this.n,
      slotSize: this.slotSize,
      headers: this.headers.address,
      payloads: this.payloads.address,
      payloadsFd: this.payloads.fd,
      pool: this.pool?.address ?? 0n,
      poolSize: this.poolSize,
    };
  }

  /** Unmap (after every thread that used it has ended). */
  close(): void {
    this.headers.close();
    this.payloads.close();
    this.pool?.close();
  }
}

/** Where an {@linkcode EntryMemory} lives, as another thread is told. */
export interface EntryAddresses {
  /** Number of entries. */
  n: number;
  /** Payload bytes per entry. */
  slotSize: number;
  /** Address of the header buffers. */
  headers: bigint;
  /** Address of the payload slots. */
  payloads: bigint;
  /** The memfd holding the payload slots (from offset 0), or -1. */
  payloadsFd: number;
  /** Address of the first queue's pool (the next queue's follows), or 0. */
  pool: bigint;
  /** Bytes of one queue's pool, or 0. */
  poolSize: number;
}

/** An ArrayBuffer over `length` bytes of native memory at `address`. */
export function viewAt(address: bigint, length: number): ArrayBuffer {
  return Deno.UnsafePointerView.getArrayBuffer(Deno.UnsafePointer.create(address)!, length);
}
