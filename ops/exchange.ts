/**
 * The boundary between a transport and the protocol layer.
 *
 * A transport owns the memory a request arrived in and the place its reply
 * goes; it describes both with an {@linkcode Exchange} and hands it to the
 * dispatcher. The dispatcher never knows which transport carried a request:
 * /dev/fuse puts header, argument and data in one buffer; io_uring puts the
 * header and argument in the entry's header buffer and the data in its
 * payload buffer. Both fill the same fields.
 *
 * @module
 */

import type { BackingIo } from "./backing_io.ts";

/** One request and the place for its reply. */
export interface Exchange {
  /** Backing calls for the file system, through this transport's ring when it has one. */
  readonly io: BackingIo;
  /** Memory holding the `fuse_in_header`. */
  header: DataView;
  /** Offset of the `fuse_in_header` in {@linkcode header}. */
  headerOffset: number;
  /** Memory holding the opcode's fixed argument struct. */
  arg: DataView;
  /** Offset of the argument in {@linkcode arg}. */
  argOffset: number;
  /** Bytes of argument present (checked against what the opcode needs). */
  argLength: number;
  /** Memory holding the variable part (names, write data). */
  data: Uint8Array;
  /** Offset of the variable part in {@linkcode data}. */
  dataOffset: number;
  /** Length of the variable part. */
  dataLength: number;

  /** Memory for the reply's payload (everything after `fuse_out_header`). */
  readonly out: DataView;
  /** Byte view of the same memory as {@linkcode out}. */
  readonly outBytes: Uint8Array;
  /** Offset of the reply payload in {@linkcode out}. */
  readonly outOffset: number;
  /** Room for the reply payload, in bytes. */
  readonly outCapacity: number;

  /** Send the reply: `error` is 0 or a negative errno; `length` payload bytes. */
  reply(unique: number, error: number, length: number): void;
  /**
   * Send a successful reply whose payload is read from `fd` at `offset`
   * (at most `length` bytes, which fit in the reply area). The transport
   * replies in every case: a failed read is answered with its errno, either
   * by throwing a SystemError synchronously (the dispatcher replies) or by
   * replying itself; a returned Promise never rejects.
   */
  replyFromFd(
    unique: number,
    fd: number,
    offset: number,
    length: number,
  ): void | Promise<void>;
  /**
   * Write the request's data (the variable part) to `fd` at `offset`;
   * returns the bytes written, and throws a SystemError on failure. With
   * `killSuidgid`, first clear the file's setuid/setgid as a write by an
   * unprivileged caller would.
   */
  writeDataToFd(fd: number, offset: number, killSuidgid: boolean): number | Promise<number>;
  /** The request needs no reply (FORGET): release the exchange. */
  noReply(): void;
}
