/**
 * The operation table: for each opcode a FileSystem answers, the request's
 * fixed struct (from ops/abi.ts), how its arguments are decoded, which
 * method answers, how the result is encoded, and what a file system without
 * the method answers. In the spirit of libfuse's `fuse_ll_ops[]`: the
 * dispatcher looks the opcode up and runs the same few steps for all.
 *
 * Entries are typed against the method they name (`operation.ts`), so a
 * decoder that passes the wrong arguments, or an encoder that expects the
 * wrong result, does not compile.
 *
 * @module
 */

import { Errno } from "../ffi/errno.ts";
import {
  AccessIn,
  CopyFileRangeIn,
  CopyFileRangeOut,
  CreateIn,
  FallocateIn,
  FileLock as FileLockLayout,
  FlushIn,
  FOPEN,
  FsyncIn,
  FUSE_FSYNC_FDATASYNC,
  FUSE_GETATTR_FH,
  FUSE_LK_FLOCK,
  FUSE_OPEN_KILL_SUIDGID,
  FUSE_WRITE_KILL_SUIDGID,
  GetattrIn,
  GetxattrIn,
  GetxattrOut,
  LinkIn,
  LkIn,
  LkOut,
  LseekIn,
  LseekOut,
  MkdirIn,
  MknodIn,
  Opcode,
  OpenIn,
  ReadIn,
  ReleaseIn,
  Rename2In,
  RenameIn,
  SetattrIn,
  SetxattrIn,
  StatxIn,
  WriteIn,
} from "./abi.ts";
import {
  decodeSetattr,
  encodeAttrOut,
  encodeEntry,
  encodeOpen,
  encodeStatfs,
  encodeStatxOut,
  encodeWriteOut,
  setU64,
} from "./codec.ts";
import {
  ANY,
  ATTR,
  BYTES,
  countUpTo,
  CREATE,
  ENTRY,
  LINK_TARGET,
  LOCK,
  NAMES,
  OFFSET,
  OPEN,
  READ,
  STATFS,
  STATX,
  WRITE,
} from "./answers.ts";
import { DirectoryList, DirectoryPlusList } from "./directory.ts";
import { FuseError } from "./error.ts";
import type { Attr, Entry, FileLock, OpenReply, ReadReply, WriteReply } from "./filesystem.ts";
import { LOCK_TO_EOF } from "./filesystem.ts";
import type { Request } from "./request.ts";
import { operation, type OperationContext, type ServedOperation } from "./operation.ts";

// ---------------------------------------------------------------------------
// Encoders shared by several entries.

function entry(e: Entry, r: Request, c: OperationContext): number {
  return encodeEntry(r.ex.out, r.ex.outOffset, e, c.entryTimeout, c.attrTimeout);
}

function attr(a: Attr, r: Request, c: OperationContext): number {
  return encodeAttrOut(r.ex.out, r.ex.outOffset, a, c.attrTimeout);
}

function none(): number {
  return 0;
}

function open(o: OpenReply, r: Request): number {
  return encodeOpen(r.ex.out, r.ex.outOffset, o);
}

/**
 * Enter a handle served from an fd before the reply leaves, so its first
 * READ finds it; with kernel passthrough, a whole-file fd goes to the
 * kernel instead: the backing id to reply with, or 0.
 */
function backed(o: OpenReply, nodeId: number, c: OperationContext): number {
  if (o.backingFd === undefined) return 0;
  const fh = o.fh ?? 0;
  const whole = o.backingOffset === undefined && o.backingLength === undefined;
  const window = whole ? undefined : {
    offset: o.backingOffset ?? 0,
    length: o.backingLength ?? Infinity,
  };
  // The fd stays the handle's also when the kernel moves the data (flush, fsync, locks).
  c.backingFds.set(fh, o.backingFd, window);
  const direct = o.directIo === true;
  return c.backingIds ? c.backingIds.acquire(nodeId, fh, o.backingFd, whole && !direct, direct) : 0;
}

/**
 * FOPEN_IO_URING_ZERO_COPY for a handle served from an fd, when the io_uring
 * queues take the client's pages: its data then never passes through the
 * server's memory.
 */
function zeroCopy(o: OpenReply, c: OperationContext): number {
  return o.backingFd !== undefined && c.zeroCopyOpens ? FOPEN.IO_URING_ZERO_COPY : 0;
}

/** `struct fuse_write_out` with `n` bytes written. */
function written(n: number, r: Request): number {
  return encodeWriteOut(r.ex.out, r.ex.outOffset, n);
}

/** getxattr/listxattr: the size when asked (size 0), else the bytes (ERANGE if too many). */
function sized(value: Uint8Array, r: Request): number {
  const ex = r.ex;
  const size = r.u32(GetxattrIn.size);
  if (size === 0) {
    ex.out.setUint32(ex.outOffset + GetxattrOut.size, value.length, true);
    ex.out.setUint32(ex.outOffset + 4, 0, true);
    return GetxattrOut.SIZE;
  }
  if (value.length > size || value.length > ex.outCapacity) throw new FuseError(Errno.ERANGE);
  ex.outBytes.set(value, ex.outOffset);
  return value.length;
}

/** The handle of GETATTR and STATX, when the kernel names one. */
function optionalFh(r: Request, flagsField: number, fhField: number): number | undefined {
  return r.u32(flagsField) & FUSE_GETATTR_FH ? r.u64(fhField) : undefined;
}

/** Bytes a READ or READDIR may return: what was asked, within the reply's room. */
function readSize(r: Request): number {
  return Math.min(r.u32(ReadIn.size), r.ex.outCapacity);
}

/** A WRITE's payload size, checked against what came (EINVAL), which it then is exactly. */
function writeSize(r: Request): number {
  const size = r.u32(WriteIn.size);
  if (size > r.ex.dataLength) throw new FuseError(Errno.EINVAL);
  r.ex.dataLength = size;
  return size;
}

const encoder = new TextEncoder();

// ---------------------------------------------------------------------------
// Decoders of locks, and their encoder.

/** A `struct fuse_file_lock` at `field` of the argument struct. */
function lockAt(r: Request, field: number): FileLock {
  return {
    start: r.u64(field + FileLockLayout.start),
    end: r.u64(field + FileLockLayout.end),
    type: r.u32(field + FileLockLayout.type),
    pid: r.u32(field + FileLockLayout.pid),
  };
}

/** Encode a `struct fuse_file_lock` at `o`. */
function encodeLock(v: DataView, o: number, l: FileLock): void {
  setU64(v, o + FileLockLayout.start, l.start);
  if (l.end >= LOCK_TO_EOF) {
    // OFFSET_MAX exactly: 2^63 - 1 is not a double, and the kernel refuses more.
    v.setUint32(o + FileLockLayout.end, 0xffffffff, true);
    v.setUint32(o + FileLockLayout.end + 4, 0x7fffffff, true);
  } else setU64(v, o + FileLockLayout.end, l.end);
  v.setUint32(o + FileLockLayout.type, l.type, true);
  v.setUint32(o + FileLockLayout.pid, l.pid, true);
}

/** SETLK and SETLKW with FUSE_LK_FLOCK: flock(2). */
function flockOf(wait: boolean): ServedOperation {
  return operation("flock", {
    answer: ANY,
    request: LkIn,
    decode: (r) => [
      r.nodeId,
      r.u64(LkIn.fh),
      r.big64(LkIn.owner),
      lockAt(r, LkIn.lk).type,
      wait,
    ],
    encode: none,
  });
}

/** SETLK and SETLKW: a POSIX lock, or flock(2) when the kernel says so. */
function setlkOf(wait: boolean): ServedOperation {
  const flock = flockOf(wait);
  return operation("setlk", {
    answer: ANY,
    request: LkIn,
    decode: (r) => [r.nodeId, r.u64(LkIn.fh), r.big64(LkIn.owner), lockAt(r, LkIn.lk), wait],
    encode: none,
    variant: (r) => r.u32(LkIn.lk_flags) & FUSE_LK_FLOCK ? flock : undefined,
  });
}

/** RENAME (no flags) and RENAME2. */
function renameOf(request: typeof RenameIn | typeof Rename2In): ServedOperation {
  return operation("rename", {
    answer: ANY,
    request,
    decode: (r) => {
      const [name, newName] = r.names();
      const flags = request === Rename2In ? r.u32(Rename2In.flags) : 0;
      return [r.nodeId, name, r.u64(RenameIn.newdir), newName, flags];
    },
    encode: none,
  });
}

/** FSYNC and FSYNCDIR. */
function fsyncOf(method: "fsync" | "fsyncdir"): ServedOperation {
  return operation(method, {
    answer: ANY,
    request: FsyncIn,
    decode: (r) => [
      r.nodeId,
      r.u64(FsyncIn.fh),
      (r.u32(FsyncIn.fsync_flags) & FUSE_FSYNC_FDATASYNC) !== 0,
    ],
    encode: none,
  });
}

/** COPY_FILE_RANGE (a 32-bit count in fuse_write_out) and COPY_FILE_RANGE_64. */
function copyFileRangeOf(wide: boolean): ServedOperation {
  const c = CopyFileRangeIn;
  return operation("copyFileRange", {
    answer: countUpTo(c.len, "the number of bytes copied (0..len)"),
    request: c,
    decode: (r) => [
      r.nodeId,
      r.u64(c.fh_in),
      r.u64(c.off_in),
      r.u64(c.nodeid_out),
      r.u64(c.fh_out),
      r.u64(c.off_out),
      r.u64(c.len),
      r.u64(c.flags),
    ],
    encode: (n, r) => {
      if (!wide) return written(Math.min(n, 0xffffffff), r);
      setU64(r.ex.out, r.ex.outOffset + CopyFileRangeOut.bytes_copied, n);
      return CopyFileRangeOut.SIZE;
    },
  });
}

// ---------------------------------------------------------------------------

/** Every opcode a FileSystem answers, and how. */
export const OPERATIONS: Readonly<Record<number, ServedOperation>> = {
  [Opcode.LOOKUP]: operation("lookup", {
    answer: ENTRY,
    decode: (r) => [r.nodeId, r.name()],
    encode: entry,
  }),
  [Opcode.GETATTR]: operation("getattr", {
    answer: ATTR,
    request: GetattrIn,
    decode: (r) => [r.nodeId, optionalFh(r, GetattrIn.getattr_flags, GetattrIn.fh)],
    encode: attr,
  }),
  [Opcode.STATX]: operation("statx", {
    answer: STATX,
    request: StatxIn,
    decode: (r) => [
      r.nodeId,
      optionalFh(r, StatxIn.getattr_flags, StatxIn.fh),
      r.u32(StatxIn.sx_flags),
      r.u32(StatxIn.sx_mask),
    ],
    encode: (stx, r, c) =>
      encodeStatxOut(r.ex.out, r.ex.outBytes, r.ex.outOffset, stx, c.attrTimeout),
  }),
  [Opcode.SETATTR]: operation("setattr", {
    answer: ATTR,
    request: SetattrIn,
    decode: (r) => [r.nodeId, decodeSetattr(r.ex.arg, r.ex.argOffset)],
    encode: attr,
  }),
  [Opcode.READLINK]: operation("readlink", {
    answer: LINK_TARGET,
    decode: (r) => [r.nodeId],
    encode: (target, r) => {
      const bytes = typeof target === "string" ? encoder.encode(target) : target;
      if (bytes.length > r.ex.outCapacity) throw new FuseError(Errno.ENAMETOOLONG);
      r.ex.outBytes.set(bytes, r.ex.outOffset);
      return bytes.length;
    },
  }),
  [Opcode.SYMLINK]: operation("symlink", {
    answer: ENTRY,
    decode: (r) => [r.nodeId, ...r.names()],
    encode: entry,
  }),
  [Opcode.MKNOD]: operation("mknod", {
    answer: ENTRY,
    request: MknodIn,
    decode: (r) => [
      r.nodeId,
      r.name(),
      r.u32(MknodIn.mode),
      r.u32(MknodIn.rdev),
      r.u32(MknodIn.umask),
    ],
    encode: entry,
  }),
  [Opcode.MKDIR]: operation("mkdir", {
    answer: ENTRY,
    request: MkdirIn,
    decode: (r) => [r.nodeId, r.name(), r.u32(MkdirIn.mode), r.u32(MkdirIn.umask)],
    encode: entry,
  }),
  [Opcode.UNLINK]: operation("unlink", {
    answer: ANY,
    decode: (r) => [r.nodeId, r.name()],
    encode: none,
  }),
  [Opcode.RMDIR]: operation("rmdir", {
    answer: ANY,
    decode: (r) => [r.nodeId, r.name()],
    encode: none,
  }),
  [Opcode.RENAME]: renameOf(RenameIn),
  [Opcode.RENAME2]: renameOf(Rename2In),
  [Opcode.LINK]: operation("link", {
    answer: ENTRY,
    request: LinkIn,
    decode: (r) => [r.u64(LinkIn.oldnodeid), r.nodeId, r.name()],
    encode: entry,
  }),
  [Opcode.OPEN]: operation("open", {
    answer: OPEN,
    request: OpenIn,
    decode: (r) => [r.nodeId, r.u32(OpenIn.flags)],
    encode: (o, r, c) =>
      encodeOpen(r.ex.out, r.ex.outOffset, o, backed(o, r.nodeId, c), zeroCopy(o, c)),
    missing: () => ({}),
    killSuidgid: { field: OpenIn.open_flags, bit: FUSE_OPEN_KILL_SUIDGID },
  }),
  [Opcode.CREATE]: operation("create", {
    answer: CREATE,
    request: CreateIn,
    decode: (r) => [
      r.nodeId,
      r.name(),
      r.u32(CreateIn.mode),
      r.u32(CreateIn.flags),
      r.u32(CreateIn.umask),
    ],
    encode: (o, r, c) => {
      const n = entry(o.entry, r, c);
      const id = backed(o, o.entry.nodeId, c);
      return n + encodeOpen(r.ex.out, r.ex.outOffset + n, o, id, zeroCopy(o, c));
    },
    killSuidgid: { field: CreateIn.open_flags, bit: FUSE_OPEN_KILL_SUIDGID },
  }),
  [Opcode.READ]: operation("read", {
    answer: READ,
    request: ReadIn,
    decode: (r) => [r.nodeId, r.u64(ReadIn.fh), r.u64(ReadIn.offset), readSize(r)],
    encode: (data: ReadReply, r, c) => {
      const size = readSize(r);
      if (data instanceof Uint8Array) {
        const n = Math.min(data.length, size);
        r.ex.outBytes.set(n === data.length ? data : data.subarray(0, n), r.ex.outOffset);
        return n;
      }
      // The transport fetches the data and replies itself, also on failure.
      c.debug?.(`   unique: ${r.unique}, data from fd ${data.fd}`);
      r.ex.replyFromFd(r.unique, data.fd, data.offset, Math.min(data.length, size));
      return -1;
    },
  }),
  [Opcode.WRITE]: operation("write", {
    answer: WRITE,
    request: WriteIn,
    decode: (r) => {
      const size = writeSize(r);
      const data = r.ex.data.subarray(r.ex.dataOffset, r.ex.dataOffset + size);
      return [r.nodeId, r.u64(WriteIn.fh), r.u64(WriteIn.offset), data, r.u32(WriteIn.flags)];
    },
    encode: (w: WriteReply, r, c) => {
      if (typeof w === "number") return written(w, r);
      const n = r.ex.writeDataToFd(w.fd, w.offset, r.killSuidgid);
      if (typeof n === "number") return written(n, r);
      c.replyLater(r, n.then((n) => written(n, r)));
      return -1;
    },
    killSuidgid: { field: WriteIn.write_flags, bit: FUSE_WRITE_KILL_SUIDGID },
  }),
  [Opcode.STATFS]: operation("statfs", {
    answer: STATFS,
    decode: (r) => [r.nodeId],
    encode: (s, r) => encodeStatfs(r.ex.out, r.ex.outOffset, s),
    missing: () => ({}),
  }),
  [Opcode.RELEASE]: operation("release", {
    answer: ANY,
    request: ReleaseIn,
    decode: (r) => [r.nodeId, r.u64(ReleaseIn.fh), r.u32(ReleaseIn.flags)],
    // The fd goes with the handle, whether or not the file system answers.
    before: ([nodeId, fh], c) => {
      c.backingFds.delete(fh);
      c.backingIds?.release(nodeId, fh);
    },
    encode: none,
    missing: () => {},
  }),
  [Opcode.FSYNC]: fsyncOf("fsync"),
  [Opcode.FLUSH]: operation("flush", {
    answer: ANY,
    request: FlushIn,
    decode: (r) => [r.nodeId, r.u64(FlushIn.fh), r.big64(FlushIn.lock_owner)],
    encode: none,
  }),
  [Opcode.SETXATTR]: operation("setxattr", {
    answer: ANY,
    // SETXATTR_EXT makes the struct longer: see Dispatcher.argSize.
    request: { SIZE: SetxattrIn.COMPAT_SIZE },
    decode: (r) => {
      const [name, end] = r.nameAt(0);
      const value = r.bytes(end, r.u32(SetxattrIn.size));
      return [r.nodeId, name, value, r.u32(SetxattrIn.flags)];
    },
    encode: none,
  }),
  [Opcode.GETXATTR]: operation("getxattr", {
    answer: BYTES,
    request: GetxattrIn,
    decode: (r) => [r.nodeId, r.name()],
    encode: sized,
  }),
  [Opcode.LISTXATTR]: operation("listxattr", {
    answer: NAMES,
    request: GetxattrIn,
    decode: (r) => [r.nodeId],
    encode: (names, r) => sized(encoder.encode(names.map((n) => n + "\0").join("")), r),
  }),
  [Opcode.REMOVEXATTR]: operation("removexattr", {
    answer: ANY,
    decode: (r) => [r.nodeId, r.name()],
    encode: none,
  }),
  [Opcode.ACCESS]: operation("access", {
    answer: ANY,
    request: AccessIn,
    decode: (r) => [r.nodeId, r.u32(AccessIn.mask)],
    encode: none,
  }),
  [Opcode.OPENDIR]: operation("opendir", {
    answer: OPEN,
    request: OpenIn,
    decode: (r) => [r.nodeId, r.u32(OpenIn.flags)],
    encode: open,
    missing: () => ({}),
  }),
  [Opcode.READDIR]: operation("readdir", {
    answer: ANY,
    request: ReadIn,
    decode: (r) => [
      r.nodeId,
      r.u64(ReadIn.fh),
      r.u64(ReadIn.offset),
      new DirectoryList(r.ex.outBytes, r.ex.out, r.ex.outOffset, readSize(r)),
    ],
    encode: (_, _r, _c, [, , , list]) => list.length,
  }),
  [Opcode.READDIRPLUS]: operation("readdirplus", {
    answer: ANY,
    request: ReadIn,
    decode: (r, c) => [
      r.nodeId,
      r.u64(ReadIn.fh),
      r.u64(ReadIn.offset),
      new DirectoryPlusList(
        r.ex.outBytes,
        r.ex.out,
        r.ex.outOffset,
        readSize(r),
        c.entryTimeout,
        c.attrTimeout,
      ),
    ],
    encode: (_, _r, _c, [, , , list]) => list.length,
  }),
  [Opcode.RELEASEDIR]: operation("releasedir", {
    answer: ANY,
    request: ReleaseIn,
    decode: (r) => [r.nodeId, r.u64(ReleaseIn.fh)],
    encode: none,
    missing: () => {},
  }),
  [Opcode.FSYNCDIR]: fsyncOf("fsyncdir"),
  [Opcode.GETLK]: operation("getlk", {
    answer: LOCK,
    request: LkIn,
    decode: (r) => [r.nodeId, r.u64(LkIn.fh), r.big64(LkIn.owner), lockAt(r, LkIn.lk)],
    encode: (lock, r) => {
      encodeLock(r.ex.out, r.ex.outOffset + LkOut.lk, lock);
      return LkOut.SIZE;
    },
  }),
  [Opcode.SETLK]: setlkOf(false),
  [Opcode.SETLKW]: setlkOf(true),
  [Opcode.FALLOCATE]: operation("fallocate", {
    answer: ANY,
    request: FallocateIn,
    decode: (r) => [
      r.nodeId,
      r.u64(FallocateIn.fh),
      r.u64(FallocateIn.offset),
      r.u64(FallocateIn.length),
      r.u32(FallocateIn.mode),
    ],
    encode: none,
  }),
  [Opcode.LSEEK]: operation("lseek", {
    answer: OFFSET,
    request: LseekIn,
    decode: (r) => [r.nodeId, r.u64(LseekIn.fh), r.u64(LseekIn.offset), r.u32(LseekIn.whence)],
    encode: (position, r) => {
      setU64(r.ex.out, r.ex.outOffset + LseekOut.offset, position);
      return LseekOut.SIZE;
    },
  }),
  [Opcode.COPY_FILE_RANGE]: copyFileRangeOf(false),
  [Opcode.COPY_FILE_RANGE_64]: copyFileRangeOf(true),
};
