/**
 * The FUSE kernel ABI (include/uapi/linux/fuse.h, protocol 7.46): opcodes,
 * flags, and the byte layout of every struct this project reads or writes.
 *
 * Struct layouts are tables of byte offsets plus a `SIZE`; all fields are
 * little-endian on the platforms Linux FUSE runs on here (x86_64, aarch64).
 * `tests/unit/abi_test.ts` checks them against the kernel header's sizes.
 *
 * @module
 */

/** Protocol major version spoken by this implementation. */
export const FUSE_KERNEL_VERSION = 7;
/** Highest protocol minor version this implementation knows. */
export const FUSE_KERNEL_MINOR_VERSION = 46;
/**
 * Lowest minor version accepted. 7.31 (Linux 5.7) brings everything this
 * implementation relies on: max_pages, 64-bit-clean structs, and
 * FUSE_WRITE_KILL_PRIV; older kernels are refused at INIT.
 */
export const FUSE_MIN_MINOR_VERSION = 31;
/** The node id of the root directory. */
export const FUSE_ROOT_ID = 1;
/** The smallest read buffer the kernel accepts for `/dev/fuse`. */
export const FUSE_MIN_READ_BUFFER = 8192;

/** Every FUSE opcode of protocol 7.45. */
export const Opcode = {
  LOOKUP: 1,
  FORGET: 2,
  GETATTR: 3,
  SETATTR: 4,
  READLINK: 5,
  SYMLINK: 6,
  MKNOD: 8,
  MKDIR: 9,
  UNLINK: 10,
  RMDIR: 11,
  RENAME: 12,
  LINK: 13,
  OPEN: 14,
  READ: 15,
  WRITE: 16,
  STATFS: 17,
  RELEASE: 18,
  FSYNC: 20,
  SETXATTR: 21,
  GETXATTR: 22,
  LISTXATTR: 23,
  REMOVEXATTR: 24,
  FLUSH: 25,
  INIT: 26,
  OPENDIR: 27,
  READDIR: 28,
  RELEASEDIR: 29,
  FSYNCDIR: 30,
  GETLK: 31,
  SETLK: 32,
  SETLKW: 33,
  ACCESS: 34,
  CREATE: 35,
  INTERRUPT: 36,
  BMAP: 37,
  DESTROY: 38,
  IOCTL: 39,
  POLL: 40,
  NOTIFY_REPLY: 41,
  BATCH_FORGET: 42,
  FALLOCATE: 43,
  READDIRPLUS: 44,
  RENAME2: 45,
  LSEEK: 46,
  COPY_FILE_RANGE: 47,
  SETUPMAPPING: 48,
  REMOVEMAPPING: 49,
  SYNCFS: 50,
  TMPFILE: 51,
  STATX: 52,
  COPY_FILE_RANGE_64: 53,
  CUSE_INIT: 4096,
} as const;

const opcodeNames = new Map<number, string>(
  Object.entries(Opcode).map(([name, value]) => [value, name]),
);

/** The name of an opcode (`"LOOKUP"`), or `"OPCODE_<n>"` if unknown. */
export function opcodeName(opcode: number): string {
  return opcodeNames.get(opcode) ?? `OPCODE_${opcode}`;
}

/**
 * FUSE_INIT flags. Bits 0..31 travel in `flags`, bits 32..63 in `flags2`
 * (read by the kernel only when the reply sets {@linkcode InitFlag.INIT_EXT}).
 * Values are bigints because the set spans 64 bits.
 */
export const InitFlag = {
  ASYNC_READ: 1n << 0n,
  POSIX_LOCKS: 1n << 1n,
  FILE_OPS: 1n << 2n,
  ATOMIC_O_TRUNC: 1n << 3n,
  EXPORT_SUPPORT: 1n << 4n,
  BIG_WRITES: 1n << 5n,
  DONT_MASK: 1n << 6n,
  SPLICE_WRITE: 1n << 7n,
  SPLICE_MOVE: 1n << 8n,
  SPLICE_READ: 1n << 9n,
  FLOCK_LOCKS: 1n << 10n,
  HAS_IOCTL_DIR: 1n << 11n,
  AUTO_INVAL_DATA: 1n << 12n,
  DO_READDIRPLUS: 1n << 13n,
  READDIRPLUS_AUTO: 1n << 14n,
  ASYNC_DIO: 1n << 15n,
  WRITEBACK_CACHE: 1n << 16n,
  NO_OPEN_SUPPORT: 1n << 17n,
  PARALLEL_DIROPS: 1n << 18n,
  HANDLE_KILLPRIV: 1n << 19n,
  POSIX_ACL: 1n << 20n,
  ABORT_ERROR: 1n << 21n,
  MAX_PAGES: 1n << 22n,
  CACHE_SYMLINKS: 1n << 23n,
  NO_OPENDIR_SUPPORT: 1n << 24n,
  EXPLICIT_INVAL_DATA: 1n << 25n,
  MAP_ALIGNMENT: 1n << 26n,
  SUBMOUNTS: 1n << 27n,
  HANDLE_KILLPRIV_V2: 1n << 28n,
  SETXATTR_EXT: 1n << 29n,
  INIT_EXT: 1n << 30n,
  INIT_RESERVED: 1n << 31n,
  SECURITY_CTX: 1n << 32n,
  HAS_INODE_DAX: 1n << 33n,
  CREATE_SUPP_GROUP: 1n << 34n,
  HAS_EXPIRE_ONLY: 1n << 35n,
  DIRECT_IO_ALLOW_MMAP: 1n << 36n,
  PASSTHROUGH: 1n << 37n,
  NO_EXPORT_SUPPORT: 1n << 38n,
  HAS_RESEND: 1n << 39n,
  ALLOW_IDMAP: 1n << 40n,
  OVER_IO_URING: 1n << 41n,
  REQUEST_TIMEOUT: 1n << 42n,
  /** io_uring buffer pools and zero-copy (7.46, Linux 7.3): see {@linkcode UringPoolCmdReq}. */
  HAS_IO_URING_BUFPOOL: 1n << 43n,
} as const;

/** The names of the flags set in `flags`, for logs and `--probe`. */
export function initFlagNames(flags: bigint): string[] {
  return Object.entries(InitFlag).filter(([, bit]) => (flags & bit) !== 0n)
    .map(([name]) => name);
}

/** `fuse_setattr_in.valid` bits. */
export const FATTR = {
  MODE: 1 << 0,
  UID: 1 << 1,
  GID: 1 << 2,
  SIZE: 1 << 3,
  ATIME: 1 << 4,
  MTIME: 1 << 5,
  FH: 1 << 6,
  ATIME_NOW: 1 << 7,
  MTIME_NOW: 1 << 8,
  LOCKOWNER: 1 << 9,
  CTIME: 1 << 10,
  KILL_SUIDGID: 1 << 11,
} as const;

/** `fuse_open_out.open_flags` bits. */
export const FOPEN = {
  DIRECT_IO: 1 << 0,
  KEEP_CACHE: 1 << 1,
  NONSEEKABLE: 1 << 2,
  CACHE_DIR: 1 << 3,
  STREAM: 1 << 4,
  NOFLUSH: 1 << 5,
  PARALLEL_DIRECT_WRITES: 1 << 6,
  PASSTHROUGH: 1 << 7,
  /** READ and WRITE of this file may use zero-copy on a zero-copy io_uring queue (7.46). */
  IO_URING_ZERO_COPY: 1 << 8,
} as const;

/** `fuse_getattr_in.getattr_flags`: `fh` is valid. */
export const FUSE_GETATTR_FH = 1 << 0;
/** `fuse_release_in.release_flags`: flush as well. */
export const FUSE_RELEASE_FLUSH = 1 << 0;
/** `fuse_release_in.release_flags`: drop the flock held by the owner. */
export const FUSE_RELEASE_FLOCK_UNLOCK = 1 << 1;
/** `fuse_write_in.write_flags`: delayed write from the page cache. */
export const FUSE_WRITE_CACHE = 1 << 0;
/** `fuse_write_in.write_flags`: `lock_owner` is valid. */
export const FUSE_WRITE_LOCKOWNER = 1 << 1;
/** `fuse_write_in.write_flags`: kill suid and sgid bits. */
export const FUSE_WRITE_KILL_SUIDGID = 1 << 2;
/** `fuse_open_in.open_flags`, `fuse_create_in.open_flags`: kill suid and sgid if executable. */
export const FUSE_OPEN_KILL_SUIDGID = 1 << 0;
/** `fuse_read_in.read_flags`: `lock_owner` is valid. */
export const FUSE_READ_LOCKOWNER = 1 << 1;
/** `fuse_fsync_in.fsync_flags`: sync data only. */
export const FUSE_FSYNC_FDATASYNC = 1 << 0;
/** `fuse_lk_in.lk_flags`: a BSD flock rather than a POSIX lock. */
export const FUSE_LK_FLOCK = 1 << 0;

// ---------------------------------------------------------------------------
// Struct layouts: byte offsets and total size.

/** `struct fuse_in_header`: precedes every request. */
export const InHeader = {
  SIZE: 40,
  len: 0,
  opcode: 4,
  unique: 8,
  nodeid: 16,
  uid: 24,
  gid: 28,
  pid: 32,
  total_extlen: 36,
} as const;

/** `struct fuse_out_header`: precedes every reply. */
export const OutHeader = { SIZE: 16, len: 0, error: 4, unique: 8 } as const;

/** `struct fuse_attr`. */
export const Attr = {
  SIZE: 88,
  ino: 0,
  size: 8,
  blocks: 16,
  atime: 24,
  mtime: 32,
  ctime: 40,
  atimensec: 48,
  mtimensec: 52,
  ctimensec: 56,
  mode: 60,
  nlink: 64,
  uid: 68,
  gid: 72,
  rdev: 76,
  blksize: 80,
  flags: 84,
} as const;

/** `struct fuse_entry_out`: the reply to LOOKUP, MKNOD, MKDIR, ... */
export const EntryOut = {
  SIZE: 128,
  nodeid: 0,
  generation: 8,
  entry_valid: 16,
  attr_valid: 24,
  entry_valid_nsec: 32,
  attr_valid_nsec: 36,
  attr: 40,
} as const;

/** `struct fuse_attr_out`: the reply to GETATTR and SETATTR. */
export const AttrOut = {
  SIZE: 104,
  attr_valid: 0,
  attr_valid_nsec: 8,
  attr: 16,
} as const;

/** `struct fuse_forget_in`. */
export const ForgetIn = { SIZE: 8, nlookup: 0 } as const;
/** `struct fuse_batch_forget_in`, followed by `count` forget_one records. */
export const BatchForgetIn = { SIZE: 8, count: 0 } as const;
/** `struct fuse_forget_one`. */
export const ForgetOne = { SIZE: 16, nodeid: 0, nlookup: 8 } as const;
/** `struct fuse_getattr_in`. */
export const GetattrIn = { SIZE: 16, getattr_flags: 0, fh: 8 } as const;

/** `struct fuse_setattr_in`. */
export const SetattrIn = {
  SIZE: 88,
  valid: 0,
  fh: 8,
  size: 16,
  lock_owner: 24,
  atime: 32,
  mtime: 40,
  ctime: 48,
  atimensec: 56,
  mtimensec: 60,
  ctimensec: 64,
  mode: 68,
  uid: 76,
  gid: 80,
} as const;

/** `struct fuse_mknod_in`, followed by the name. */
export const MknodIn = { SIZE: 16, mode: 0, rdev: 4, umask: 8 } as const;
/** `struct fuse_mkdir_in`, followed by the name. */
export const MkdirIn = { SIZE: 8, mode: 0, umask: 4 } as const;
/** `struct fuse_rename_in`, followed by old and new names. */
export const RenameIn = { SIZE: 8, newdir: 0 } as const;
/** `struct fuse_rename2_in`, followed by old and new names. */
export const Rename2In = { SIZE: 16, newdir: 0, flags: 8 } as const;
/** `struct fuse_link_in`, followed by the new name. */
export const LinkIn = { SIZE: 8, oldnodeid: 0 } as const;
/** `struct fuse_open_in`. */
export const OpenIn = { SIZE: 8, flags: 0, open_flags: 4 } as const;
/** `struct fuse_create_in`, followed by the name. */
export const CreateIn = {
  SIZE: 16,
  flags: 0,
  mode: 4,
  umask: 8,
  open_flags: 12,
} as const;
/** `struct fuse_open_out`. */
export const OpenOut = {
  SIZE: 16,
  fh: 0,
  open_flags: 8,
  backing_id: 12,
} as const;
/** `struct fuse_release_in`. */
export const ReleaseIn = {
  SIZE: 24,
  fh: 0,
  flags: 8,
  release_flags: 12,
  lock_owner: 16,
} as const;
/** `struct fuse_flush_in`. */
export const FlushIn = { SIZE: 24, fh: 0, lock_owner: 16 } as const;

/** `struct fuse_read_in` (also READDIR and READDIRPLUS). */
export const ReadIn = {
  SIZE: 40,
  fh: 0,
  offset: 8,
  size: 16,
  read_flags: 20,
  lock_owner: 24,
  flags: 32,
} as const;

/** `struct fuse_write_in`, followed by the data. */
export const WriteIn = {
  SIZE: 40,
  fh: 0,
  offset: 8,
  size: 16,
  write_flags: 20,
  lock_owner: 24,
  flags: 32,
} as const;
/** `struct fuse_write_out`. */
export const WriteOut = { SIZE: 8, size: 0 } as const;

/** `struct fuse_kstatfs` inside `fuse_statfs_out`. */
export const StatfsOut = {
  SIZE: 80,
  blocks: 0,
  bfree: 8,
  bavail: 16,
  files: 24,
  ffree: 32,
  bsize: 40,
  namelen: 44,
  frsize: 48,
} as const;

/** `struct fuse_fsync_in` (FSYNC and FSYNCDIR). */
export const FsyncIn = { SIZE: 16, fh: 0, fsync_flags: 8 } as const;
/** `struct fuse_setxattr_in` with FUSE_SETXATTR_EXT; name and value follow. */
export const SetxattrIn = {
  SIZE: 16,
  COMPAT_SIZE: 8,
  size: 0,
  flags: 4,
  setxattr_flags: 8,
} as const;
/** `struct fuse_getxattr_in` (GETXATTR, LISTXATTR); the name follows. */
export const GetxattrIn = { SIZE: 8, size: 0 } as const;
/** `struct fuse_getxattr_out`: the reply when the caller asked for the size. */
export const GetxattrOut = { SIZE: 8, size: 0 } as const;
/** `struct fuse_access_in`. */
export const AccessIn = { SIZE: 8, mask: 0 } as const;
/** `struct fuse_interrupt_in`. */
export const InterruptIn = { SIZE: 8, unique: 0 } as const;

/** Notification codes: the `error` field of an out header whose `unique` is 0. */
export const NotifyCode = {
  POLL: 1,
  INVAL_INODE: 2,
  INVAL_ENTRY: 3,
  STORE: 4,
  RETRIEVE: 5,
  DELETE: 6,
} as const;
/** `struct fuse_notify_inval_inode_out`. */
export const NotifyInvalInodeOut = { SIZE: 24, ino: 0, off: 8, len: 16 } as const;
/** `struct fuse_notify_inval_entry_out`; the name and a NUL follow. */
export const NotifyInvalEntryOut = { SIZE: 16, parent: 0, namelen: 8, flags: 12 } as const;
/** `struct fuse_notify_delete_out`; the name and a NUL follow. */
export const NotifyDeleteOut = { SIZE: 24, parent: 0, child: 8, namelen: 16 } as const;
/** `struct fuse_notify_store_out`; the data follows. */
export const NotifyStoreOut = { SIZE: 24, nodeid: 0, offset: 8, size: 16 } as const;
/** `struct fuse_notify_retrieve_out`. */
export const NotifyRetrieveOut = {
  SIZE: 32,
  notify_unique: 0,
  nodeid: 8,
  offset: 16,
  size: 24,
} as const;
/** `struct fuse_notify_retrieve_in`: NOTIFY_REPLY's argument; the data follows. */
export const NotifyRetrieveIn = { SIZE: 40, offset: 8, size: 16 } as const;

/** `struct fuse_file_lock`. */
export const FileLock = { SIZE: 24, start: 0, end: 8, type: 16, pid: 20 } as const;
/** `struct fuse_lk_in` (GETLK, SETLK, SETLKW). */
export const LkIn = {
  SIZE: 48,
  fh: 0,
  owner: 8,
  lk: 16,
  lk_flags: 40,
} as const;
/** `struct fuse_lk_out`. */
export const LkOut = { SIZE: 24, lk: 0 } as const;

/** `struct fuse_fallocate_in`. */
export const FallocateIn = {
  SIZE: 32,
  fh: 0,
  offset: 8,
  length: 16,
  mode: 24,
} as const;
/** `struct fuse_lseek_in`. */
export const LseekIn = { SIZE: 24, fh: 0, offset: 8, whence: 16 } as const;
/** `struct fuse_lseek_out`. */
export const LseekOut = { SIZE: 8, offset: 0 } as const;
/** `struct fuse_copy_file_range_in`. */
export const CopyFileRangeIn = {
  SIZE: 56,
  fh_in: 0,
  off_in: 8,
  nodeid_out: 16,
  fh_out: 24,
  off_out: 32,
  len: 40,
  flags: 48,
} as const;
/** `struct fuse_copy_file_range_out` (COPY_FILE_RANGE_64). */
export const CopyFileRangeOut = { SIZE: 8, bytes_copied: 0 } as const;

/** `struct fuse_statx_in`. */
export const StatxIn = {
  SIZE: 24,
  getattr_flags: 0,
  fh: 8,
  sx_flags: 16,
  sx_mask: 20,
} as const;

/**
 * `struct fuse_statx_out`: attr_valid, attr_valid_nsec, flags, spare[2], then
 * `struct fuse_statx`, which has the layout of Linux's `struct statx`.
 */
export const StatxOut = { SIZE: 288, attr_valid: 0, attr_valid_nsec: 8, stat: 32 } as const;

/** `struct fuse_init_in`. */
export const InitIn = {
  SIZE: 64,
  /** The size before 7.36 extended it (no flags2). */
  COMPAT_SIZE: 16,
  major: 0,
  minor: 4,
  max_readahead: 8,
  flags: 12,
  flags2: 16,
} as const;

/** `struct fuse_init_out`. */
export const InitOut = {
  SIZE: 64,
  major: 0,
  minor: 4,
  max_readahead: 8,
  flags: 12,
  max_background: 16,
  congestion_threshold: 18,
  max_write: 20,
  time_gran: 24,
  max_pages: 28,
  map_alignment: 30,
  flags2: 32,
  max_stack_depth: 36,
  request_timeout: 40,
} as const;

/** `struct fuse_dirent` header; the name follows, padded to 8 bytes. */
export const Dirent = { SIZE: 24, ino: 0, off: 8, namelen: 16, type: 20 } as const;
/** `struct fuse_direntplus`: an entry_out, then a dirent. */
export const DirentPlus = { SIZE: 152, entry_out: 0, dirent: 128 } as const;

/** Align a directory record length to 8 bytes, as FUSE_DIRENT_ALIGN does. */
export function direntAlign(n: number): number {
  return (n + 7) & ~7;
}

// ---------------------------------------------------------------------------
// FUSE-over-io_uring (7.42+).

/** `enum fuse_uring_cmd`: the uring_cmd `cmd_op` values. */
export const UringCmd = { REGISTER: 1, COMMIT_AND_FETCH: 2 } as const;

/** `struct fuse_uring_req_header`: the per-entry header buffer. */
export const UringReqHeader = {
  SIZE: 288,
  in_out: 0,
  op_in: 128,
  ring_ent_in_out: 256,
} as const;

/**
 * `struct fuse_uring_ent_in_out`, inside the request header. `offset` (7.46)
 * says where in the queue's buffer pool the payload is; it was padding before.
 */
export const UringEntInOut = {
  SIZE: 32,
  flags: 0,
  commit_id: 8,
  payload_sz: 16,
  offset: 20,
} as const;

/**
 * `struct fuse_uring_cmd_req`: the command area of the SQE (offset 48).
 * `init_flags` and `init_queue_depth` (`init.flags`, `init.queue_depth`)
 * exist only on kernels with the buffer-ring series (below) and are read
 * only at REGISTER; mainline kernels have padding there.
 */
export const UringCmdReq = {
  SIZE: 24,
  flags: 0,
  commit_id: 8,
  qid: 16,
  init_flags: 18,
  init_queue_depth: 20,
} as const;

// ---------------------------------------------------------------------------
// The FUSE buffer-ring and zero-copy series (Joanne Koong, v4, 2026-01; not
// in mainline, carried by the seed kernel). Its ABI moved between versions:
// these are v4's values as ported to 7.2, where the register opcodes moved
// from 37/38 (as posted) to 38/39 because mainline 7.1+ took 37 for
// IORING_REGISTER_BPF_FILTER. Probe before use (server/probe.ts): never
// trust a kernel version.

/** `fuse_uring_cmd_req` init flag: this queue takes payloads from a kernel-managed buffer ring. */
export const FUSE_URING_BUF_RING = 1 << 0;
/** `fuse_uring_cmd_req` init flag: READ/WRITE pages go into the fixed-buffer table (needs BUF_RING). */
export const FUSE_URING_ZERO_COPY = 1 << 1;
/** The buffer group FUSE takes payload buffers from (`FUSE_URING_RINGBUF_GROUP`). */
export const FUSE_URING_RINGBUF_GROUP = 0;

// ---------------------------------------------------------------------------
// io_uring buffer pools and zero-copy: FUSE 7.46, merged for Linux 7.3 (the
// rework of the series above that reached mainline). A kernel that has them
// says FUSE_HAS_IO_URING_BUFPOOL at INIT; ADD_QUEUE refuses zero-copy (EPERM)
// without CAP_SYS_ADMIN. Checked against 7.3's own headers by
// tests/unit/abi_test.ts.

/** `enum fuse_uring_cmd` of 7.46: create queue `qid`; give it its buffer pool. */
export const UringPoolCmd = { ADD_QUEUE: 3, ADD_BUFPOOL: 4 } as const;

/** ADD_QUEUE flag (7.3's `FUSE_URING_ZERO_COPY`): the client's pages go to the entries' slots. */
export const FUSE_URING_POOL_ZERO_COPY = 1 << 0;

/** `fuse_uring_ent_in_out.flags` (7.46): the payload is the client's pages, in the entry's slot. */
export const FUSE_URING_ENT_ZERO_COPY = 1 << 0;

/**
 * `struct fuse_uring_cmd_req` of 7.46: after `qid`, a union of the pool's
 * region (ADD_BUFPOOL: `bufpool.uaddr`, `.len`, `.reserved` = 0) and, for
 * REGISTER on a zero-copy queue, the entry's slot in the server's sparse
 * buffer table (`ent_zero_copy_buf_index`).
 */
export const UringPoolCmdReq = {
  SIZE: 40,
  flags: 0,
  commit_id: 8,
  qid: 16,
  bufpool_uaddr: 24,
  bufpool_len: 32,
  bufpool_reserved: 36,
  /** In the union, where `bufpool.uaddr` is. */
  ent_zero_copy_buf_index: 24,
} as const;
