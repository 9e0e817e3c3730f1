/**
 * One io_uring ring entry as a request slot: its header buffer, the memory
 * its payload is in (which the mode decides, see `modes/mode.ts`), and the
 * {@linkcode SlotExchange} the dispatcher sees over them.
 *
 * @module
 */

import { Errno } from "../../ffi/errno.ts";
import { Opcode, UringReqHeader } from "../../ops/abi.ts";
import type { BackingIo } from "../../ops/backing_io.ts";
import { SlotExchange } from "../io/slot_exchange.ts";
import { uringPayloadSize } from "./commands.ts";

/** What an entry asks of the transport that serves it. */
export interface EntryOwner {
  /** Backing calls for the file system. */
  readonly io: BackingIo;
  /** Write the reply's header and commit the entry. */
  reply(entry: UringEntry, error: number, length: number): void;
  /** Move `length` bytes between `fd` and the request (`read`: into the reply). */
  transfer(
    entry: UringEntry,
    read: boolean,
    fd: number,
    offset: number,
    length: number,
  ): number | Promise<number>;
}

/** One ring entry: its header, its payload memory, and the Exchange over them. */
export class UringEntry extends SlotExchange {
  /** Entry index: its user_data, and its slot in the fixed-buffer table. */
  readonly id: number;
  /** The kernel queue it is registered on. */
  readonly qid: number;
  /** Its own payload slot (mainline: the kernel's payload buffer; else staging). */
  readonly ownAddress: bigint;
  /** Offset of its own slot in the slots' memory. */
  readonly ownOffset: number;
  /** The kernel-managed buffer this entry holds, -1 for none (buffer-ring modes). */
  bufferId = -1;
  /** Where this request's buffer starts in the transport's pools (buffer-pool modes). */
  poolOffset = 0;
  /**
   * Zero-copy: this request's data is the client's pages in fixed slot
   * `id`, going `in` (WRITE) or `out` (READ; with the seeds' series also
   * READDIR, READLINK); else null.
   */
  pages: "in" | "out" | null = null;
  /** The pages hold the reply already (READ_FIXED from a backing fd). */
  replyInPages = false;
  /** The pages' write data has been staged in the entry's own slot. */
  dataStaged = false;
  /** Where the request's data is, as an address. */
  dataAddress: bigint;
  /** Where the reply's payload goes, as an address. */
  outAddress: bigint;
  #owner: EntryOwner;

  /**
   * Entry `id` of queue `qid`: its header in `headers`, its own slot of
   * `slotSize` bytes in `payloads` (at `payloadAddress`).
   */
  constructor(
    owner: EntryOwner,
    id: number,
    qid: number,
    headers: DataView,
    payloads: DataView,
    payloadAddress: bigint,
    slotSize: number,
  ) {
    const headerOffset = id * UringReqHeader.SIZE;
    super(
      headers,
      headerOffset,
      headerOffset + UringReqHeader.op_in,
      payloads,
      id * slotSize,
      slotSize,
    );
    this.#owner = owner;
    this.id = id;
    this.qid = qid;
    this.ownOffset = id * slotSize;
    this.ownAddress = this.dataAddress = this.outAddress = payloadAddress;
  }

  /** See {@linkcode SlotExchange.io}. */
  get io(): BackingIo {
    return this.#owner.io;
  }

  /** See {@linkcode SlotExchange.reply}. */
  reply(_unique: number, error: number, length: number): void {
    // `unique` is still in place from the request (in and out headers share it).
    this.#owner.reply(this, error, length);
  }

  protected readInto(fd: number, offset: number, length: number): number | Promise<number> {
    return this.#owner.transfer(this, true, fd, offset, length);
  }

  protected writeFrom(fd: number, offset: number, length: number): number | Promise<number> {
    return this.#owner.transfer(this, false, fd, offset, length);
  }

  /** See {@linkcode SlotExchange.noReply}. */
  noReply(): void {
    // The kernel sends no-reply requests (FORGET) over /dev/fuse only; if one
    // ever came here, an error commit still hands the entry back.
    this.#owner.reply(this, -Errno.EIO, 0);
  }
}

/**
 * Set where an io_uring request's argument and data are, from what the
 * kernel wrote: the argument is what `argSize` says the opcode needs, in
 * the op_in area, and the data is `payload_sz` bytes of payload. NOTIFY_REPLY
 * is the exception: the kernel sends its first argument empty, so its
 * `fuse_notify_retrieve_in` leads the payload. Returns 0, or EINVAL when
 * `payload_sz` claims more than the `capacity` bytes of payload memory.
 */
export function fitUringRequest(
  ex: SlotExchange,
  opcode: number,
  argSize: number,
  capacity: number,
): number {
  const size = uringPayloadSize(ex.header, ex.headerOffset);
  ex.arg = ex.header;
  ex.argOffset = ex.headerOffset + UringReqHeader.op_in;
  ex.argLength = Math.min(argSize, UringReqHeader.ring_ent_in_out - UringReqHeader.op_in);
  ex.dataLength = size > capacity ? 0 : size;
  if (size > capacity) return Errno.EINVAL;
  if (opcode === Opcode.NOTIFY_REPLY) {
    const d = ex.data;
    ex.arg = new DataView(d.buffer, d.byteOffset, d.byteLength);
    ex.argOffset = ex.dataOffset;
    ex.argLength = Math.min(argSize, size);
    ex.dataOffset += ex.argLength;
    ex.dataLength -= ex.argLength;
  }
  return 0;
}
