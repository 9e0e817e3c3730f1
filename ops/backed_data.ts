/**
 * READ and WRITE of a handle backed by an fd (`OpenReply.backingFd`): the
 * one data path every transport and thread uses for them. The session
 * serves them from the fd without calling the FileSystem: the request's
 * `fh` names an entry of the shared {@linkcode BackingFdTable}, and the
 * data moves between that fd and the request's own memory through the
 * Exchange (`replyFromFd`, `writeDataToFd`: READ_FIXED / WRITE_FIXED on
 * io_uring, `pread` / `pwrite` or ring READ / WRITE on /dev/fuse).
 *
 * It runs before a request is decoded, as the hot path of file data, and
 * allocates nothing but what the transport's I/O needs.
 *
 * @module
 */

import { Errno, SystemError } from "../ffi/errno.ts";
import { FUSE_WRITE_KILL_SUIDGID, Opcode, ReadIn, WriteIn } from "./abi.ts";
import type { BackingFdTable } from "./backing_fds.ts";
import { encodeWriteOut, getU64 } from "./codec.ts";
import type { Exchange } from "./exchange.ts";

/** How the caller replies: `error` 0 or a negative errno, `length` payload bytes. */
export type Reply = (ex: Exchange, unique: number, error: number, length: number) => void;

const errnoOf = (e: unknown) => e instanceof SystemError ? e.errno : Errno.EIO;

/**
 * Serve `ex` (a READ or WRITE, `opcode`) from the fd that backs its handle
 * in `table`, replying through `reply` or the transport's own reply; false,
 * with nothing done, when the handle is not backed.
 */
export function serveBacked(
  ex: Exchange,
  opcode: number,
  unique: number,
  table: BackingFdTable,
  reply: Reply,
): boolean {
  const a = ex.arg;
  const o = ex.argOffset;
  // fuse_read_in and fuse_write_in share fh, offset and size.
  const fd = table.fdAt(a, o + ReadIn.fh);
  if (fd < 0) return false;
  const fh = a.getUint32(o + ReadIn.fh, true); // fdAt found its high half 0
  const offset = getU64(a, o + ReadIn.offset);
  const size = a.getUint32(o + ReadIn.size, true);
  if (opcode === Opcode.READ) {
    // A window of the fd ends its reads at its end, as a file's end does.
    const n = table.extent(fh, offset, Math.min(size, ex.outCapacity), false);
    try {
      ex.replyFromFd(unique, fd, table.start(fh, offset), n); // replies itself
    } catch (e) {
      reply(ex, unique, -errnoOf(e), 0); // a direct read that failed at once
    }
    return true;
  }
  if (size > ex.dataLength) {
    reply(ex, unique, -Errno.EINVAL, 0);
    return true;
  }
  ex.dataLength = size;
  const room = table.extent(fh, offset, size, true); // a write may not cross a window's end
  if (room < 0) {
    reply(ex, unique, room, 0);
    return true;
  }
  const kill = (a.getUint32(o + WriteIn.write_flags, true) & FUSE_WRITE_KILL_SUIDGID) !== 0;
  const written = (n: number) => reply(ex, unique, 0, encodeWriteOut(ex.out, ex.outOffset, n));
  try {
    const n = ex.writeDataToFd(fd, table.start(fh, offset), kill);
    if (typeof n === "number") written(n);
    else n.then(written, (e) => reply(ex, unique, -errnoOf(e), 0));
  } catch (e) {
    reply(ex, unique, -errnoOf(e), 0);
  }
  return true;
}
