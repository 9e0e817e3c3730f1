/**
 * The one data path of every transport: a request sits in a slot of pinned
 * memory (its header and fixed argument in one view, names, write data and
 * the reply's payload in another), and file data moves between that slot
 * and a backing fd without passing through JavaScript.
 *
 * A transport says only what differs: where the parts of its slot sit (the
 * fields), how a reply leaves (`reply`), and how the slot is read into from
 * an fd or written to one (`readInto`, `writeFrom`: `pread`/`pwrite`, ring
 * READ/WRITE, or READ_FIXED/WRITE_FIXED). Answering a read from an fd,
 * clearing setuid/setgid before a write, and turning a failed read into the
 * reply's errno are the same for all and live here.
 *
 * @module
 */

import { Errno, SystemError } from "../../ffi/errno.ts";
import { clearSuidSgid } from "../../ffi/libc.ts";
import { InHeader } from "../../ops/abi.ts";
import type { BackingIo } from "../../ops/backing_io.ts";
import type { Exchange } from "../../ops/exchange.ts";

/** A request slot in pinned memory, as the dispatcher sees it. */
export abstract class SlotExchange implements Exchange {
  /** Memory holding the `fuse_in_header` (and the argument, see `arg`). */
  header: DataView;
  /** Offset of the `fuse_in_header` in {@linkcode header}. */
  headerOffset: number;
  /** Memory holding the fixed argument. */
  arg: DataView;
  /** Offset of the argument in {@linkcode arg}. */
  argOffset: number;
  /** Bytes of argument present. */
  argLength = 0;
  /** Memory holding names and write data. */
  data: Uint8Array;
  /** Offset of the variable part in {@linkcode data}. */
  dataOffset: number;
  /** Length of the variable part. */
  dataLength = 0;
  /** Memory for the reply's payload. */
  out: DataView;
  /** Byte view of {@linkcode out}. */
  outBytes: Uint8Array;
  /** Offset of the reply payload in {@linkcode out}. */
  outOffset: number;
  /** Room for the reply payload. */
  outCapacity: number;

  /**
   * @param head the memory of the header and argument
   * @param payload the memory of names, write data and the reply payload
   */
  constructor(
    head: DataView,
    headerOffset: number,
    argOffset: number,
    payload: DataView,
    payloadOffset: number,
    outCapacity: number,
  ) {
    this.header = this.arg = head;
    this.headerOffset = headerOffset;
    this.argOffset = argOffset;
    this.out = payload;
    this.data = this.outBytes = new Uint8Array(payload.buffer, payload.byteOffset);
    this.dataOffset = this.outOffset = payloadOffset;
    this.outCapacity = outCapacity;
  }

  /**
   * Take this request's names and data from `bytes` at `offset` (a
   * transport whose payloads move between requests: a kernel-managed
   * buffer, a staging slot).
   */
  setData(bytes: Uint8Array, offset: number): void {
    this.data = bytes;
    this.dataOffset = offset;
  }

  /** Write this request's reply payload into `view` at `offset`, `capacity` bytes at most. */
  setOut(view: DataView, bytes: Uint8Array, offset: number, capacity: number): void {
    this.out = view;
    this.outBytes = bytes;
    this.outOffset = offset;
    this.outCapacity = capacity;
  }

  /** Backing calls for the file system answering this request. */
  abstract get io(): BackingIo;
  /** Send the reply: `error` is 0 or a negative errno; `length` payload bytes. */
  abstract reply(unique: number, error: number, length: number): void;
  /** The request needs no reply (FORGET): release the slot. */
  abstract noReply(): void;
  /**
   * Read up to `length` bytes of `fd` at `offset` into the reply payload;
   * the bytes read. Fails (throws, or rejects) with a SystemError.
   */
  protected abstract readInto(fd: number, offset: number, length: number): number | Promise<number>;
  /** Write `length` bytes of the request's data to `fd` at `offset`; the bytes written. */
  protected abstract writeFrom(
    fd: number,
    offset: number,
    length: number,
  ): number | Promise<number>;

  /** See {@linkcode Exchange.replyFromFd}. */
  replyFromFd(unique: number, fd: number, offset: number, length: number): void | Promise<void> {
    const n = this.readInto(fd, offset, length); // a direct read that fails throws: the dispatcher answers
    if (typeof n === "number") return this.reply(unique, 0, n);
    return n.then(
      (n) => this.reply(unique, 0, n),
      (e: unknown) => this.reply(unique, -(e instanceof SystemError ? e.errno : Errno.EIO), 0),
    );
  }

  /** See {@linkcode Exchange.writeDataToFd}. */
  writeDataToFd(fd: number, offset: number, killSuidgid: boolean): number | Promise<number> {
    // As the write of a caller without CAP_FSETID would.
    if (killSuidgid) {
      clearSuidSgid(fd, this.header.getUint32(this.headerOffset + InHeader.gid, true));
    }
    return this.writeFrom(fd, offset, this.dataLength);
  }
}
