/**
 * SQE builders: liburing's `io_uring_prep_*` inline helpers, written in
 * TypeScript. Each fills a zeroed SQE at index `at` of a ring's SQE array
 * `s` (from `Ring.sqe()`); the ring (`ring.ts`) submits it.
 *
 * @module
 */

import { IORING_FSYNC_DATASYNC, IORING_OP, IOSQE, Sqe } from "./uring_abi.ts";

/**
 * The fields most operations use, as liburing's `io_uring_prep_rw` sets
 * them: opcode, fd, addr, len, off (an offset, or a second pointer) and the
 * per-operation flags word. Each builder below says what goes where.
 */
function prep(
  s: DataView,
  at: number,
  op: number,
  fd: number,
  addr: bigint | number,
  len: number,
  off: bigint | number,
  opFlags = 0,
): void {
  s.setUint8(at + Sqe.opcode, op);
  s.setInt32(at + Sqe.fd, fd, true);
  s.setBigUint64(at + Sqe.addr, BigInt(addr), true);
  s.setUint32(at + Sqe.len, len, true);
  s.setBigUint64(at + Sqe.off, BigInt.asUintN(64, BigInt(off)), true);
  s.setUint32(at + Sqe.opFlags, opFlags, true);
}

/** A NOP. */
export function prepNop(s: DataView, at: number): void {
  s.setUint8(at + Sqe.opcode, IORING_OP.NOP);
}

/**
 * Post a completion with `res` and `userData` on another ring (MSG_RING,
 * IORING_MSG_DATA): how queue threads hand requests to each other without
 * a thread pool. No completion is posted on the sending ring unless it fails.
 */
export function prepMsgRing(
  s: DataView,
  at: number,
  targetRingFd: number,
  res: number,
  userData: number,
): void {
  prep(s, at, IORING_OP.MSG_RING, targetRingFd, 0, res, userData);
  s.setUint8(at + Sqe.flags, IOSQE.CQE_SKIP_SUCCESS);
}

/** `IORING_OP_URING_CMD` on `fd` with `cmdOp`; the command area is at `at + Sqe.cmd`. */
export function prepUringCmd(s: DataView, at: number, fd: number, cmdOp: number): void {
  prep(s, at, IORING_OP.URING_CMD, fd, 0, 0, cmdOp);
}

/** `pread(fd, addr, len, offset)` into fixed buffer `bufIndex`. */
export function prepReadFixed(
  s: DataView,
  at: number,
  fd: number,
  addr: bigint,
  len: number,
  offset: number,
  bufIndex: number,
): void {
  prep(s, at, IORING_OP.READ_FIXED, fd, addr, len, offset);
  s.setUint16(at + Sqe.bufIndex, bufIndex, true);
}

/** `pwrite(fd, addr, len, offset)` from fixed buffer `bufIndex`. */
export function prepWriteFixed(
  s: DataView,
  at: number,
  fd: number,
  addr: bigint,
  len: number,
  offset: number,
  bufIndex: number,
): void {
  prep(s, at, IORING_OP.WRITE_FIXED, fd, addr, len, offset);
  s.setUint16(at + Sqe.bufIndex, bufIndex, true);
}

/** `pread(fd, addr, len, offset)` (offset -1: the file position). */
export function prepRead(
  s: DataView,
  at: number,
  fd: number,
  addr: bigint,
  len: number,
  offset: number,
): void {
  prep(s, at, IORING_OP.READ, fd, addr, len, offset);
}

/** `pwrite(fd, addr, len, offset)`. */
export function prepWrite(
  s: DataView,
  at: number,
  fd: number,
  addr: bigint,
  len: number,
  offset: number,
): void {
  prep(s, at, IORING_OP.WRITE, fd, addr, len, offset);
}

/** `fsync(fd)`, or `fdatasync` with `datasync`. */
export function prepFsync(s: DataView, at: number, fd: number, datasync: boolean): void {
  prep(s, at, IORING_OP.FSYNC, fd, 0, 0, 0, datasync ? IORING_FSYNC_DATASYNC : 0);
}

/** `fallocate(fd, mode, offset, length)`: the length travels in addr, the mode in len. */
export function prepFallocate(
  s: DataView,
  at: number,
  fd: number,
  mode: number,
  offset: number,
  length: number,
): void {
  prep(s, at, IORING_OP.FALLOCATE, fd, length, mode, offset);
}

/** `ftruncate(fd, length)` (Linux 6.9+). */
export function prepFtruncate(s: DataView, at: number, fd: number, length: number): void {
  prep(s, at, IORING_OP.FTRUNCATE, fd, 0, 0, length);
}

/** `openat(dirfd, path, flags, mode)`; `path` is a pinned NUL-terminated string. */
export function prepOpenat(
  s: DataView,
  at: number,
  dirfd: number,
  path: bigint,
  flags: number,
  mode: number,
): void {
  prep(s, at, IORING_OP.OPENAT, dirfd, path, mode, 0, flags);
}

/** `openat2(dirfd, path, how, sizeof how)`; `how` points at a pinned `struct open_how`. */
export function prepOpenat2(
  s: DataView,
  at: number,
  dirfd: number,
  path: bigint,
  how: bigint,
): void {
  prep(s, at, IORING_OP.OPENAT2, dirfd, path, 24, how);
}

/** `close(fd)`. */
export function prepClose(s: DataView, at: number, fd: number): void {
  prep(s, at, IORING_OP.CLOSE, fd, 0, 0, 0);
}

/** `statx(dirfd, path, flags, mask, buf)`: the mask travels in len, the buffer in off. */
export function prepStatx(
  s: DataView,
  at: number,
  dirfd: number,
  path: bigint,
  flags: number,
  mask: number,
  buf: bigint,
): void {
  prep(s, at, IORING_OP.STATX, dirfd, path, mask, buf, flags);
}

/** `unlinkat(dirfd, path, flags)`. */
export function prepUnlinkat(
  s: DataView,
  at: number,
  dirfd: number,
  path: bigint,
  flags: number,
): void {
  prep(s, at, IORING_OP.UNLINKAT, dirfd, path, 0, 0, flags);
}

/** `mkdirat(dirfd, path, mode)`. */
export function prepMkdirat(
  s: DataView,
  at: number,
  dirfd: number,
  path: bigint,
  mode: number,
): void {
  prep(s, at, IORING_OP.MKDIRAT, dirfd, path, mode, 0);
}

/** `renameat2(olddirfd, oldpath, newdirfd, newpath, flags)`: the new dirfd travels in len. */
export function prepRenameat(
  s: DataView,
  at: number,
  oldDirfd: number,
  oldPath: bigint,
  newDirfd: number,
  newPath: bigint,
  flags: number,
): void {
  prep(s, at, IORING_OP.RENAMEAT, oldDirfd, oldPath, newDirfd, newPath, flags);
}

/** `symlinkat(target, newdirfd, linkpath)`. */
export function prepSymlinkat(
  s: DataView,
  at: number,
  target: bigint,
  newDirfd: number,
  linkPath: bigint,
): void {
  prep(s, at, IORING_OP.SYMLINKAT, newDirfd, target, 0, linkPath);
}

/** `linkat(olddirfd, oldpath, newdirfd, newpath, flags)`, laid out as renameat. */
export function prepLinkat(
  s: DataView,
  at: number,
  oldDirfd: number,
  oldPath: bigint,
  newDirfd: number,
  newPath: bigint,
  flags: number,
): void {
  prep(s, at, IORING_OP.LINKAT, oldDirfd, oldPath, newDirfd, newPath, flags);
}

/** Mark the SQE at `at` as linked to the next one (IOSQE_IO_LINK). */
export function linkNext(s: DataView, at: number): void {
  s.setUint8(at + Sqe.flags, s.getUint8(at + Sqe.flags) | IOSQE.IO_LINK);
}
