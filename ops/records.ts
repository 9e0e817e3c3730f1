/**
 * The records a file system answers with, the same for every operation that
 * carries them: an object's attributes, a directory entry, an open file,
 * file system statistics. They import nothing, so the codec and the
 * directory lists can use them without depending on the FileSystem
 * interface (which re-exports them).
 *
 * @module
 */

/**
 * Attributes of an object (`struct stat`). Unset numbers default to 0,
 * `nlink` to 1 and `blksize` to 4096.
 */
export interface Attr {
  /** Inode number shown to callers (`st_ino`). */
  ino: number;
  /** File type and permission bits, e.g. `S.IFREG | 0o644`. */
  mode: number;
  /** Number of hard links. */
  nlink?: number;
  /** Owner. */
  uid?: number;
  /** Group. */
  gid?: number;
  /** Device number for character and block devices. */
  rdev?: number;
  /** Size in bytes. */
  size?: number;
  /** Number of 512-byte blocks allocated. */
  blocks?: number;
  /** Preferred I/O size. */
  blksize?: number;
  /** Last access, seconds since the epoch. */
  atimeSec?: number;
  /** Nanoseconds part of the last access. */
  atimeNsec?: number;
  /** Last modification, seconds. */
  mtimeSec?: number;
  /** Nanoseconds part of the last modification. */
  mtimeNsec?: number;
  /** Last status change, seconds. */
  ctimeSec?: number;
  /** Nanoseconds part of the last status change. */
  ctimeNsec?: number;
}

/**
 * The answer to a name lookup (and to mknod, mkdir, symlink, link, create).
 * Each Entry returned counts one lookup of `nodeId`, which the kernel later
 * releases with FORGET (`FileSystem.forget`).
 */
export interface Entry {
  /** The node id the kernel will use for this object; never 0 or reused while known. */
  nodeId: number;
  /** Generation: `(nodeId, generation)` must be unique for the mount's life. */
  generation?: number;
  /** The object's attributes. */
  attr: Attr;
  /** Seconds the kernel may cache the name; default: the session's `entryTimeout`. */
  entryTimeout?: number;
  /** Seconds the kernel may cache the attributes; default: the session's `attrTimeout`. */
  attrTimeout?: number;
}

/** The answer to open, opendir and create. */
export interface OpenReply {
  /** A file handle of your choosing, passed back on every request on this open file. */
  fh?: number;
  /** Bypass the page cache for this open file. */
  directIo?: boolean;
  /** Keep cached data from earlier opens. */
  keepCache?: boolean;
  /** The file is not seekable. */
  nonSeekable?: boolean;
  /** The file is a stream with no position at all. */
  stream?: boolean;
  /** Cache the directory listing (opendir). */
  cacheDir?: boolean;
  /** Do not send FLUSH on close. */
  noFlush?: boolean;
  /** Allow parallel direct writes to this file. */
  parallelDirectWrites?: boolean;
  /**
   * An fd holding this file's data (open, create). READ and WRITE of the
   * handle are then served by the session as `pread`/`pwrite` of this fd
   * (on the io_uring transport by each queue's own thread, with
   * READ_FIXED / WRITE_FIXED), and `read` and `write` are not called for
   * it. Keep the fd open until `release`. Taken only for handles (`fh`)
   * below 2^20, as fds are; for any other handle `read`/`write` are called.
   * With {@linkcode backingOffset} or {@linkcode backingLength}, the file
   * is that part of the fd (a member of an archive, a partition of an image).
   */
  backingFd?: number;
  /** Where the file's first byte is in {@linkcode backingFd} (default 0). */
  backingOffset?: number;
  /**
   * The file's length in {@linkcode backingFd}: reads end there, and a
   * write that would cross it fails with EFBIG (default: to the fd's end).
   */
  backingLength?: number;
}

/** File system statistics (`struct statvfs`). Unset numbers default to 0. */
export interface StatFs {
  /** Total blocks of `frsize` bytes. */
  blocks?: number;
  /** Free blocks. */
  bfree?: number;
  /** Free blocks for unprivileged users. */
  bavail?: number;
  /** Total inodes. */
  files?: number;
  /** Free inodes. */
  ffree?: number;
  /** Block size. */
  bsize?: number;
  /** Longest name; default 255. */
  namelen?: number;
  /** Fragment size; default `bsize`. */
  frsize?: number;
}

/** A point in time for setattr: seconds and nanoseconds, or "now". */
export type SetTime = { sec: number; nsec: number } | "now";

/** The changes a setattr asks for; absent fields stay as they are. */
export interface SetAttr {
  /** New permission bits (the file type bits are the object's own). */
  mode?: number;
  /** New owner. */
  uid?: number;
  /** New group. */
  gid?: number;
  /** New size (truncate or extend). */
  size?: number;
  /** New access time. */
  atime?: SetTime;
  /** New modification time. */
  mtime?: SetTime;
  /** New status-change time (rarely sent). */
  ctime?: { sec: number; nsec: number };
  /** The open file the change came through (ftruncate, futimens...). */
  fh?: number;
  /** Clear the setuid and setgid bits (FATTR_KILL_SUIDGID). */
  killSuidgid?: boolean;
}
