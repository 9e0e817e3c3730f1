/**
 * The mainline mode (Linux 6.14+): each entry owns a 288-byte header
 * buffer and a payload buffer of `slotSize` bytes, both pinned, handed to
 * the kernel as an iovec pair at REGISTER. The payload buffers also sit in
 * the ring's sparse fixed-buffer table at index = entry, so file data goes
 * from a backing fd into the reply with READ_FIXED and from the request to
 * a backing fd with WRITE_FIXED, never through JavaScript (with direct
 * backing calls, `pread`/`pwrite` on the serving thread).
 *
 * @module
 */

import { PinnedRegion } from "../../../ffi/memory.ts";
import { UringReqHeader } from "../../../ops/abi.ts";
import { prepRegister } from "../commands.ts";
import type { UringEntry } from "../entry.ts";
import { type ModeContext, type PayloadMode, transferThroughServer } from "./mode.ts";

/** Payloads in the entries' own pinned slots, registered as fixed buffers. */
export class MainlineMode implements PayloadMode {
  /** See {@linkcode PayloadMode.name}. */
  readonly name = "mainline";
  /** iovec pairs for REGISTER, then the slots' iovecs: kept while the kernel may read them. */
  #iovecs: PinnedRegion | null = null;

  /** A mode over the transport's context `c`. */
  constructor(readonly c: ModeContext) {}

  /** Register the payload slots as fixed buffers 0..n-1. */
  setup(): void {
    const m = this.c.memory;
    const n = m.n;
    const v = (this.#iovecs = new PinnedRegion(n * 48)).view;
    for (let i = 0; i < n; i++) {
      const payload = m.payloads + BigInt(i * m.slotSize);
      v.setBigUint64(i * 32, m.headers + BigInt(i * UringReqHeader.SIZE), true);
      v.setBigUint64(i * 32 + 8, BigInt(UringReqHeader.SIZE), true);
      v.setBigUint64(i * 32 + 16, payload, true);
      v.setBigUint64(i * 32 + 24, BigInt(m.slotSize), true);
      v.setBigUint64(n * 32 + i * 16, payload, true);
      v.setBigUint64(n * 32 + i * 16 + 8, BigInt(m.slotSize), true);
    }
    this.c.ring.registerSparseBuffers(n);
    this.c.ring.updateBuffers(0, this.#iovecs.at(n * 32), n);
  }

  /** REGISTER with the entry's header and payload iovecs. */
  prepRegister(fuseFd: number, entry: UringEntry): number {
    const iovecs = this.#iovecs!.address + BigInt(entry.id * 32);
    return prepRegister(this.c.ring, fuseFd, iovecs, entry.qid);
  }

  /** No pool: commands name no fixed buffer. */
  commandSlot(): number {
    return -1;
  }

  /** The payload is the entry's own slot (a NOTIFY_REPLY moved its start: reset it). */
  place(entry: UringEntry): void {
    entry.setData(this.c.ownBytes, entry.ownOffset);
  }

  /** READ_FIXED / WRITE_FIXED on the entry's slot, or pread / pwrite when direct. */
  transfer(
    entry: UringEntry,
    read: boolean,
    fd: number,
    offset: number,
    length: number,
  ): number | Promise<number> {
    return transferThroughServer(this.c, entry, read, fd, offset, length, entry.id);
  }

  /** The slot is ordinary memory: every thread reads it as it is. */
  stageIn(): null {
    return null;
  }

  /** The reply is where the kernel reads it. */
  stageOut(): null {
    return null;
  }

  /** A handed-over reply is in the slot the kernel reads. */
  handBack(): null {
    return null;
  }

  /** Unmap the iovecs (the ring, which held them, is closed). */
  close(): void {
    this.#iovecs?.close();
  }
}
