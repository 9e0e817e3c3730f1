/**
 * The pinned memory of a set of io_uring entries, allocated by the
 * session's thread and adopted by the thread that serves them.
 *
 * @module
 */

import { PinnedRegion } from "../../ffi/memory.ts";
import { UringReqHeader } from "../../ops/abi.ts";

/**
 * The pinned memory of a set of entries: a header buffer and a payload
 * slot of `slotSize` bytes each. In `mainline` mode the slots are the
 * payload buffers the kernel writes into; in the buffer-ring modes they are
 * where a request is staged when it cannot stay in the kernel's memory
 * (handed to another thread; zero-copy data a FileSystem makes or reads
 * itself), and with `shared` they are a memfd's pages, so that io_uring can
 * move them to and from the client's pages by fd. Held by the session's
 * thread, so that it outlives every thread that uses it.
 */
export class EntryMemory {
  /** `n` header buffers. */
  readonly headers: PinnedRegion;
  /** `n` payload slots of `slotSize` bytes. */
  readonly payloads: PinnedRegion;

  /** Map `n` entries with `slotSize`-byte payloads (`shared`: in a memfd). */
  constructor(readonly n: number, readonly slotSize: number, shared = false) {
    this.headers = new PinnedRegion(n * UringReqHeader.SIZE);
    try {
      this.payloads = new PinnedRegion(n * slotSize, { shared });
    } catch (e) {
      this.headers.close();
      throw e;
    }
  }

  /** Pinned bytes of headers and payloads. */
  get size(): number {
    return this.headers.size + this.payloads.size;
  }

  /** The addresses, for a thread that adopts this memory. */
  get addresses(): EntryAddresses {
    return {
      n: this.n,
      slotSize: this.slotSize,
      headers: this.headers.address,
      payloads: this.payloads.address,
      payloadsFd: this.payloads.fd,
    };
  }

  /** Unmap (after every thread that used it has ended). */
  close(): void {
    this.headers.close();
    this.payloads.close();
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
}

/** An ArrayBuffer over `length` bytes of native memory at `address`. */
export function viewAt(address: bigint, length: number): ArrayBuffer {
  return Deno.UnsafePointerView.getArrayBuffer(Deno.UnsafePointer.create(address)!, length);
}
