/**
 * One request as the operation table reads it: the header's fields, the
 * fixed argument struct by field offset (from ops/abi.ts), and the names and
 * bytes that follow it.
 *
 * @module
 */

import { Errno } from "../ffi/errno.ts";
import { getU64 } from "./codec.ts";
import { FuseError } from "./error.ts";
import type { Exchange } from "./exchange.ts";

const decoder = new TextDecoder("utf-8", { fatal: true });

/** A request being served: where it came from and how to read it. */
export class Request {
  /** The exchange it arrived in; the reply goes back through it. */
  readonly ex: Exchange;
  /** Its opcode. */
  readonly opcode: number;
  /** The kernel's id of it, echoed in the reply. */
  readonly unique: number;
  /** The node it is about (`fuse_in_header.nodeid`). */
  readonly nodeId: number;
  /** The kernel asks to clear setuid/setgid with it (WRITE, OPEN, CREATE). */
  killSuidgid = false;

  /** A request read from `ex`. */
  constructor(ex: Exchange, opcode: number, unique: number, nodeId: number) {
    this.ex = ex;
    this.opcode = opcode;
    this.unique = unique;
    this.nodeId = nodeId;
  }

  /** The u32 at `field` of the argument struct. */
  u32(field: number): number {
    return this.ex.arg.getUint32(this.ex.argOffset + field, true);
  }

  /** The u64 at `field` of the argument struct, as a number (exact below 2^53). */
  u64(field: number): number {
    return getU64(this.ex.arg, this.ex.argOffset + field);
  }

  /** The u64 at `field` of the argument struct, whole (lock owners use all 64 bits). */
  big64(field: number): bigint {
    return this.ex.arg.getBigUint64(this.ex.argOffset + field, true);
  }

  /** The NUL-terminated name after the argument struct. */
  name(): string {
    return this.nameAt(0)[0];
  }

  /** The two NUL-terminated names after the argument struct (RENAME, SYMLINK). */
  names(): [string, string] {
    const [first, end] = this.nameAt(0);
    return [first, this.nameAt(end)[0]];
  }

  /**
   * The name `from` bytes into the data, and the offset just past its NUL.
   * EINVAL when it has no NUL; EILSEQ when it is not UTF-8 (names are
   * JavaScript strings, which could not carry such bytes faithfully).
   */
  nameAt(from: number): [string, number] {
    const ex = this.ex;
    const d = ex.data;
    const start = ex.dataOffset + from;
    const nul = d.indexOf(0, start);
    if (nul < 0 || nul >= ex.dataOffset + ex.dataLength) throw new FuseError(Errno.EINVAL);
    let name: string;
    try {
      name = decoder.decode(d.subarray(start, nul));
    } catch {
      throw new FuseError(Errno.EILSEQ);
    }
    return [name, nul + 1 - ex.dataOffset];
  }

  /** `length` bytes of data from `from`, copied (the request's memory is reused). */
  bytes(from: number, length: number): Uint8Array {
    const ex = this.ex;
    if (from + length > ex.dataLength) throw new FuseError(Errno.EINVAL);
    return ex.data.slice(ex.dataOffset + from, ex.dataOffset + from + length);
  }
}
