/**
 * The interface a file system author implements: one optional method per
 * FUSE operation, in the style of libfuse's low-level API, go-fuse's `fs`
 * package and Rust's fuser. Objects are named by node id (the root is
 * {@linkcode FUSE_ROOT_ID}); names are strings; replies are plain objects.
 *
 * A method may return its result or a Promise of it, and fails a request by
 * throwing a {@linkcode FuseError} (or a `SystemError`, whose errno is
 * passed on). Anything else thrown, a plain `Error` included, answers EIO
 * and is reported to `onError`. A method that is not implemented answers
 * ENOSYS, or the kernel's documented default where libfuse gives one (open,
 * opendir, release, releasedir and flush succeed; statfs reports an empty
 * file system).
 *
 * Answers are checked before they are encoded: one of the wrong type (a
 * string from `read`, an Attr from `lookup`) fails its request with EIO and
 * is reported to `onError` once per method as an `AnswerError`. The answer
 * of a method declared `void` is not used.
 *
 * Modes passed to `create`, `mkdir` and `mknod` already have the caller's
 * umask taken off by the kernel.
 *
 * Never do I/O on the mount itself from the thread that serves it: the
 * request would wait for a reply only that same thread can send.
 *
 * Byte views handed to a method (`data` of `write`, names already decoded)
 * point into transport buffers and are valid only until the method returns or
 * its Promise settles: copy what you keep.
 *
 * @module
 */

import type { BackingIo } from "./backing_io.ts";
import type { DirectoryList, DirectoryPlusList } from "./directory.ts";
import type { Attr, Entry, OpenReply, SetAttr, StatFs } from "./records.ts";

export type { Attr, Entry, OpenReply, SetAttr, SetTime, StatFs } from "./records.ts";

/** Who sent a request. */
export interface RequestContext {
  /** The request's unique id (for logs). */
  readonly unique: number;
  /** The calling process's effective uid. */
  readonly uid: number;
  /** The calling process's effective gid. */
  readonly gid: number;
  /** The calling thread group id (0 for requests without a caller). */
  readonly pid: number;
  /**
   * Asynchronous backing calls (statx, openat, mkdirat, fsync, ...) through
   * the transport's ring, or direct calls where there is none.
   */
  readonly io: BackingIo;
  /**
   * The caller lacks CAP_FSETID and the kernel asks to clear setuid (and
   * setgid, if group-executable) as part of this open with O_TRUNC, create
   * or write. Sent only when the session negotiated `handleKillpriv`.
   */
  readonly killSuidgid: boolean;
  /**
   * Aborted when the kernel interrupts this request (the caller got a
   * signal; FUSE's INTERRUPT). A method that waits on something slow
   * should watch it and give up: throwing `signal.reason` (a FuseError of
   * EINTR) ends the request with EINTR. Made on first use.
   */
  readonly signal: AbortSignal;
}

/** Lock types of {@linkcode FileLock} (`fcntl.h`). */
export const LockType = { F_RDLCK: 0, F_WRLCK: 1, F_UNLCK: 2 } as const;

/**
 * The end of a lock that reaches the end of the file: the kernel's
 * `OFFSET_MAX` (2^63 - 1) as a number (which rounds it to 2^63); any end
 * at or past it means "to the end of the file".
 */
export const LOCK_TO_EOF = 2 ** 63;

/** A byte-range lock, as FUSE carries it (`struct fuse_file_lock`). */
export interface FileLock {
  /** First byte. */
  start: number;
  /** Last byte, inclusive ({@linkcode LOCK_TO_EOF}: to the end of the file). */
  end: number;
  /** {@linkcode LockType}. */
  type: number;
  /** The holder's pid (GETLK's answer; 0 when unknown). */
  pid: number;
}

/**
 * Data for a read that the server fetches from a file descriptor: with
 * io_uring it is read straight into the reply buffer (READ_FIXED), with
 * /dev/fuse by `pread` into it; no copy is made in JavaScript.
 */
export interface FdSource {
  /** A file descriptor open for reading. */
  fd: number;
  /** Where in the file to read. */
  offset: number;
  /** How many bytes to read at most (a short read at EOF is fine). */
  length: number;
}

/** A read answers with the bytes, or with where to fetch them. */
export type ReadReply = Uint8Array | FdSource;

/**
 * Where to put the data of a write: the server writes it straight from the
 * request buffer (WRITE_FIXED with io_uring, `pwrite` otherwise).
 */
export interface FdSink {
  /** A file descriptor open for writing. */
  fd: number;
  /** Where in the file to write. */
  offset: number;
}

/** A write answers with the number of bytes written, or with where to write. */
export type WriteReply = number | FdSink;

/** What `create` answers: the new entry and the open file. */
export interface CreateReply extends OpenReply {
  /** The created object. */
  entry: Entry;
}

/** What the kernel and the session agreed on at INIT, given to `init`. */
export interface ConnectionInfo {
  /** Negotiated protocol minor version (7.x). */
  readonly minor: number;
  /** Largest write the kernel will send. */
  readonly maxWrite: number;
  /** Largest read the kernel will ask for. */
  readonly maxRead: number;
  /** Names of the INIT flags both sides enabled. */
  readonly flags: readonly string[];
}

/** A value or a Promise of it: every method may be sync or async. */
export type MaybePromise<T> = T | Promise<T>;

/**
 * A FUSE file system. Implement the methods you support; see the module doc
 * for the defaults of the others. `ctx` names the caller of every request.
 */
export interface FileSystem {
  /** Called once INIT is negotiated, before any other request. */
  init?(info: ConnectionInfo): MaybePromise<void>;
  /** Called when the session ends (unmount, or the kernel's DESTROY). */
  destroy?(): MaybePromise<void>;

  /** Look up `name` in directory `parent`. Throw ENOENT if absent. */
  lookup?(ctx: RequestContext, parent: number, name: string): MaybePromise<Entry>;
  /** The kernel dropped `nlookup` references to `nodeId`. No reply is sent. */
  forget?(nodeId: number, nlookup: number): void;
  /** Attributes of `nodeId` (`fh` is set when called through an open file). */
  getattr?(ctx: RequestContext, nodeId: number, fh?: number): MaybePromise<Attr>;
  /**
   * Extended attributes (statx(2)): answer a Linux `struct statx` of at
   * least 256 bytes, as statx(2) fills it (`fuse_statx` has the same
   * layout). The kernel asks for it when a caller wants fields that getattr
   * lacks, such as the birth time; without this method it uses getattr.
   */
  statx?(
    ctx: RequestContext,
    nodeId: number,
    fh: number | undefined,
    flags: number,
    mask: number,
  ): MaybePromise<Uint8Array>;
  /** Change attributes; answer the new attributes. */
  setattr?(ctx: RequestContext, nodeId: number, changes: SetAttr): MaybePromise<Attr>;
  /** The target of symlink `nodeId`. */
  readlink?(ctx: RequestContext, nodeId: number): MaybePromise<string | Uint8Array>;
  /** Create a file, fifo, socket or device node. */
  mknod?(
    ctx: RequestContext,
    parent: number,
    name: string,
    mode: number,
    rdev: number,
    umask: number,
  ): MaybePromise<Entry>;
  /** Create a directory. */
  mkdir?(
    ctx: RequestContext,
    parent: number,
    name: string,
    mode: number,
    umask: number,
  ): MaybePromise<Entry>;
  /** Create symlink `name` in `parent` pointing at `target`. */
  symlink?(
    ctx: RequestContext,
    parent: number,
    name: string,
    target: string,
  ): MaybePromise<Entry>;
  /** Remove a non-directory. */
  unlink?(ctx: RequestContext, parent: number, name: string): MaybePromise<void>;
  /** Remove an empty directory. */
  rmdir?(ctx: RequestContext, parent: number, name: string): MaybePromise<void>;
  /** Rename; `flags` carries RENAME_NOREPLACE (1) or RENAME_EXCHANGE (2). */
  rename?(
    ctx: RequestContext,
    parent: number,
    name: string,
    newParent: number,
    newName: string,
    flags: number,
  ): MaybePromise<void>;
  /** Make a hard link to `nodeId` as `newName` in `newParent`. */
  link?(
    ctx: RequestContext,
    nodeId: number,
    newParent: number,
    newName: string,
  ): MaybePromise<Entry>;
  /** Open a file; `flags` are the open(2) flags. */
  open?(ctx: RequestContext, nodeId: number, flags: number): MaybePromise<OpenReply>;
  /** Create and open a file (O_CREAT). */
  create?(
    ctx: RequestContext,
    parent: number,
    name: string,
    mode: number,
    flags: number,
    umask: number,
  ): MaybePromise<CreateReply>;
  /** Read up to `size` bytes at `offset`; answer bytes or an {@linkcode FdSource}. */
  read?(
    ctx: RequestContext,
    nodeId: number,
    fh: number,
    offset: number,
    size: number,
  ): MaybePromise<ReadReply>;
  /** Write `data` at `offset`; answer the count written or an {@linkcode FdSink}. */
  write?(
    ctx: RequestContext,
    nodeId: number,
    fh: number,
    offset: number,
    data: Uint8Array,
    flags: number,
  ): MaybePromise<WriteReply>;
  /** Called on each close(2) of a file descriptor. */
  flush?(ctx: RequestContext, nodeId: number, fh: number, lockOwner: bigint): MaybePromise<void>;
  /** The last reference to an open file is gone. */
  release?(ctx: RequestContext, nodeId: number, fh: number, flags: number): MaybePromise<void>;
  /** Sync file data (and metadata unless `datasync`). */
  fsync?(ctx: RequestContext, nodeId: number, fh: number, datasync: boolean): MaybePromise<void>;
  /**
   * The first lock that would conflict with `lock` (`owner` is the caller's
   * lock owner), or `lock` with type `F_UNLCK` if none would. Together with
   * {@linkcode setlk} it makes the session negotiate POSIX locks, which the
   * kernel otherwise keeps itself, per mount.
   */
  getlk?(
    ctx: RequestContext,
    nodeId: number,
    fh: number,
    owner: bigint,
    lock: FileLock,
  ): MaybePromise<FileLock>;
  /**
   * Take or release (`F_UNLCK`) a POSIX byte-range lock for `owner`. With
   * `wait` (F_SETLKW), wait for a conflicting lock to go, and give up with
   * EINTR when `ctx.signal` aborts (the caller was interrupted); without
   * it, fail with EAGAIN.
   */
  setlk?(
    ctx: RequestContext,
    nodeId: number,
    fh: number,
    owner: bigint,
    lock: FileLock,
    wait: boolean,
  ): MaybePromise<void>;
  /**
   * flock(2) on the open file: `type` is F_RDLCK (shared), F_WRLCK
   * (exclusive) or F_UNLCK; `wait` as for {@linkcode setlk}. Its presence
   * makes the session negotiate BSD locks.
   */
  flock?(
    ctx: RequestContext,
    nodeId: number,
    fh: number,
    owner: bigint,
    type: number,
    wait: boolean,
  ): MaybePromise<void>;
  /** Open a directory. */
  opendir?(ctx: RequestContext, nodeId: number, flags: number): MaybePromise<OpenReply>;
  /**
   * List a directory from `offset` (0, or an offset you gave an entry) into
   * `list` until `list.add` returns false.
   */
  readdir?(
    ctx: RequestContext,
    nodeId: number,
    fh: number,
    offset: number,
    list: DirectoryList,
  ): MaybePromise<void>;
  /**
   * Like readdir, with an {@linkcode Entry} per name; each entry that `add`
   * accepts counts one lookup (except for "." and "..").
   */
  readdirplus?(
    ctx: RequestContext,
    nodeId: number,
    fh: number,
    offset: number,
    list: DirectoryPlusList,
  ): MaybePromise<void>;
  /** The last reference to an open directory is gone. */
  releasedir?(ctx: RequestContext, nodeId: number, fh: number): MaybePromise<void>;
  /** Sync a directory. */
  fsyncdir?(ctx: RequestContext, nodeId: number, fh: number, datasync: boolean): MaybePromise<void>;
  /** File system statistics. */
  statfs?(ctx: RequestContext, nodeId: number): MaybePromise<StatFs>;
  /** Check access `mask` (R_OK 4, W_OK 2, X_OK 1, F_OK 0) for the caller. */
  access?(ctx: RequestContext, nodeId: number, mask: number): MaybePromise<void>;
  /** Set an extended attribute; `flags` are XATTR_CREATE (1) / XATTR_REPLACE (2). */
  setxattr?(
    ctx: RequestContext,
    nodeId: number,
    name: string,
    value: Uint8Array,
    flags: number,
  ): MaybePromise<void>;
  /** The value of an extended attribute (throw ENODATA if absent). */
  getxattr?(ctx: RequestContext, nodeId: number, name: string): MaybePromise<Uint8Array>;
  /** The names of the extended attributes. */
  listxattr?(ctx: RequestContext, nodeId: number): MaybePromise<string[]>;
  /** Remove an extended attribute. */
  removexattr?(ctx: RequestContext, nodeId: number, name: string): MaybePromise<void>;
  /** Allocate or punch space (`mode` as fallocate(2)). */
  fallocate?(
    ctx: RequestContext,
    nodeId: number,
    fh: number,
    offset: number,
    length: number,
    mode: number,
  ): MaybePromise<void>;
  /** Find data or holes: answer the resulting offset (SEEK_DATA 3, SEEK_HOLE 4). */
  lseek?(
    ctx: RequestContext,
    nodeId: number,
    fh: number,
    offset: number,
    whence: number,
  ): MaybePromise<number>;
  /** Copy a range between two open files; answer the bytes copied. */
  copyFileRange?(
    ctx: RequestContext,
    nodeIn: number,
    fhIn: number,
    offsetIn: number,
    nodeOut: number,
    fhOut: number,
    offsetOut: number,
    length: number,
    flags: number,
  ): MaybePromise<number>;
}
