/**
 * The passthrough's nodes: each node id names a held `O_PATH | O_NOFOLLOW`
 * fd of a backing object, keyed by (dev, ino), with the kernel's lookup
 * count; FORGET releases it. The table lives in shared memory
 * ({@linkcode SharedInodeTable}), so every serving thread's instance sees
 * the same nodes. Past an fd budget, a node keeps a file handle instead and
 * is reopened for each call (as virtiofsd can).
 *
 * Also the few helpers every backing call uses: statx of a held fd, the
 * `/proc/self/fd/N` path of one, and the check that a name is one component.
 *
 * @module
 */

import { Errno } from "../ffi/errno.ts";
import { fdLimit } from "../ffi/fd_limit.ts";
import { AT, check, check64, clearSuidSgid, close, cstr, libc, O, S } from "../ffi/libc.ts";
import type { BackingIo } from "../ops/backing_io.ts";
import { FuseError } from "../ops/error.ts";
import type { Attr, Entry, StatFs } from "../ops/filesystem.ts";
import { attrFromStatx } from "./files.ts";
import { withCString, withScratch } from "./scratch.ts";
import { fileHandleOf, InodeFileHandles } from "./inode_file_handles.ts";
import { InodeFlag, type InodeKey, NO_FD, SharedInodeTable } from "./shared_inodes.ts";

/** statx's STATX_BASIC_STATS mask. */
export const STATX_BASIC_STATS = 0x7ff;
/** The flags of a statx of a held fd itself: AT_EMPTY_PATH, never following it. */
export const NOFOLLOW_EMPTY = AT.EMPTY_PATH | AT.SYMLINK_NOFOLLOW;
/** The empty path (with {@linkcode NOFOLLOW_EMPTY}: the fd itself). */
export const EMPTY = cstr("");

/** One backing object the kernel knows: its held O_PATH fd. */
export interface Inode {
  /** The fd (held, or reopened for this call). */
  fd: number;
  /** {@linkcode InodeFlag}s. */
  flags: number;
  /** `fd` was reopened from the node's file handle for this call: close it after. */
  temporary: boolean;
}

/** What every instance of one mount's nodes shares. */
export interface SourceInodesShared {
  /** The {@linkcode SharedInodeTable}'s memory. */
  inodes: SharedArrayBuffer;
  /** The {@linkcode InodeFileHandles}' memory. */
  fileHandles: SharedArrayBuffer;
  /** The source's mount id (name_to_handle_at), or -1 where file handles cannot be used. */
  mountId: number;
  /** The source opened for reading (open_by_handle_at refuses O_PATH fds), or -1. */
  mountFd: number;
}

/** Run `read` on the statx of `fd` (an O_PATH fd is fine), made through the backing ring. */
export function withStatx<T>(io: BackingIo, fd: number, read: (stx: DataView) => T): Promise<T> {
  return withScratch(async (s) => {
    await io.statx(fd, EMPTY, NOFOLLOW_EMPTY, STATX_BASIC_STATS, s.bytes);
    return read(s.view);
  });
}

/** Attributes of `fd` from statx. */
export function statFd(io: BackingIo, fd: number): Promise<Attr> {
  return withStatx(io, fd, attrFromStatx);
}

/** The (dev major, dev minor, ino) of a `struct statx`: what names an inode. */
function inodeKey(v: DataView): InodeKey {
  return {
    major: v.getUint32(136, true),
    minor: v.getUint32(140, true),
    ino: Number(v.getBigUint64(32, true)),
  };
}

/** The path that reaches the inode held as `fd` (the kernel resolves it to the inode itself). */
export function procPath(fd: number): Uint8Array<ArrayBuffer> {
  return cstr(`/proc/self/fd/${fd}`);
}

/**
 * Run `fn` with `name` as a C string (in a lent buffer): a name the kernel
 * sent must be one path component.
 */
export function withComponent<T>(name: string, fn: (c: Uint8Array) => Promise<T>): Promise<T> {
  if (name.length === 0 || name.includes("/")) return Promise.reject(new FuseError(Errno.EINVAL));
  return withCString(name, fn);
}

/** The nodes of one mount's passthrough, as one thread sees them. */
export class SourceInodes {
  #table: SharedInodeTable;
  /** File handles of the nodes that hold no fd (past the fd budget). */
  #fileHandles: InodeFileHandles;
  #mountId: number;
  #mountFd: number;
  #fdBudget = 0;
  #budgetCheckedAt = -Infinity;

  /**
   * Hold the directory `source` as node 1 (for the mount's life), or, with
   * `shared`, join the nodes whose {@linkcode shared} that is (another
   * thread's instance of the same mount).
   */
  constructor(source: string, shared?: SourceInodesShared) {
    if (shared) {
      this.#table = new SharedInodeTable(shared.inodes);
      this.#fileHandles = new InodeFileHandles(shared.fileHandles);
      this.#mountId = shared.mountId;
      this.#mountFd = shared.mountFd;
      return;
    }
    this.#fileHandles = new InodeFileHandles();
    const fd = check(
      libc.open(cstr(source), O.PATH | O.DIRECTORY | O.CLOEXEC, 0),
      "open",
      source,
    );
    const buf = new Uint8Array(256);
    check(libc.statx(fd, EMPTY, NOFOLLOW_EMPTY, STATX_BASIC_STATS, buf), "statx");
    this.#table = new SharedInodeTable();
    this.#table.setRoot(fd, inodeKey(new DataView(buf.buffer)));
    // A FUSE source may encode handles it cannot decode once its inode is
    // evicted (without EXPORT_SUPPORT): keep fds there.
    this.#mountId = fsType(fd) === FUSE_SUPER_MAGIC ? -1 : fileHandleOf(fd)?.mountId ?? -1;
    this.#mountFd = this.#mountId < 0
      ? -1
      : libc.openat(fd, cstr("."), O.RDONLY | O.DIRECTORY | O.CLOEXEC, 0);
    if (this.#mountFd < 0) this.#mountId = -1;
  }

  /** What another thread's instance needs to see the same nodes. */
  get shared(): SourceInodesShared {
    return {
      inodes: this.#table.buffer,
      fileHandles: this.#fileHandles.buffer,
      mountId: this.#mountId,
      mountFd: this.#mountFd,
    };
  }

  /** Number of backing objects held. */
  get size(): number {
    return this.#table.size;
  }

  /** Nodes that hold no fd, only a file handle (past the fd budget). */
  get handleOnly(): number {
    return this.#fileHandles.count;
  }

  /** The fd of the source directory (node 1). */
  get rootFd(): number {
    return this.#table.fd(1);
  }

  /** A number never given out before, for handles that must not be reused. */
  unique(): number {
    return this.#table.unique();
  }

  /**
   * The node's fd: the one it holds, or, for a node kept as a file handle,
   * one reopened for this call (`temporary`: see {@linkcode use}).
   */
  inode(nodeId: number): Inode {
    const fd = this.#table.fd(nodeId);
    const flags = this.#table.flags(nodeId);
    if (fd >= 0) return { fd, flags, temporary: false };
    if (fd !== NO_FD) throw new FuseError(Errno.ESTALE);
    const handle = this.#fileHandles.load(this.#table.slotOf(nodeId));
    const reopened = check(
      libc.open_by_handle_at(this.#mountFd, handle, O.PATH | O.CLOEXEC),
      "open_by_handle_at",
    );
    return { fd: reopened, flags, temporary: true };
  }

  /**
   * Run `fn` with the node's fd, closing a reopened one once `fn` (and the
   * Promise it returns) is done: no backing call uses it after that.
   */
  use<T>(nodeId: number, fn: (inode: Inode) => T): T {
    const inode = this.inode(nodeId);
    if (!inode.temporary) return fn(inode);
    let result: T;
    try {
      result = fn(inode);
    } catch (e) {
      close(inode.fd);
      throw e;
    }
    if (result instanceof Promise) return result.finally(() => close(inode.fd)) as T;
    close(inode.fd);
    return result;
  }

  /**
   * How many nodes may hold an fd: half the open-file limit, the rest left
   * for open files, directories and the transports. Read again now and
   * then: the session raises the limit after the passthrough is made.
   */
  #budget(): number {
    const now = performance.now();
    if (now - this.#budgetCheckedAt > 1000) {
      this.#budgetCheckedAt = now;
      this.#fdBudget = Math.max(64, Math.floor(fdLimit().soft / 2));
    }
    return this.#fdBudget;
  }

  /** Run `fn` with the fd of directory `parent` and `name` as a C string (one component). */
  at<T>(
    parent: number,
    name: string,
    fn: (dirFd: number, name: Uint8Array) => Promise<T>,
  ): Promise<T> {
    return this.use(parent, (dir) => withComponent(name, (c) => fn(dir.fd, c)));
  }

  /** Look `name` up in `parent` and count one lookup of the result. */
  async lookup(io: BackingIo, parent: number, name: string): Promise<Entry> {
    return await this.use(parent, (dir) => this.#lookupIn(io, parent, dir, name));
  }

  async #lookupIn(io: BackingIo, parent: number, dir: Inode, name: string): Promise<Entry> {
    if (name === "." || (name === ".." && parent === 1)) {
      const attr = await statFd(io, dir.fd);
      if (!this.#table.ref(parent)) throw new FuseError(Errno.ESTALE);
      return { nodeId: parent, attr };
    }
    let fd: number;
    try {
      fd = await withComponent(
        name,
        (c) => io.openat(dir.fd, c, O.PATH | O.NOFOLLOW | O.CLOEXEC, 0),
      );
    } catch (e) {
      const errno = (e as { errno?: number }).errno;
      if (errno !== Errno.EMFILE && errno !== Errno.ENFILE) throw e;
      return await this.#lookupHeld(io, dir, name, e);
    }
    let attr: Attr, key: InodeKey;
    try {
      ({ attr, key } = await withStatx(io, fd, (stx) => ({
        attr: attrFromStatx(stx),
        key: inodeKey(stx),
      })));
    } catch (e) {
      close(fd);
      throw e;
    }
    // One node per backing object, whichever thread looked it up first.
    const type = attr.mode & S.IFMT;
    const flags = type === S.IFLNK
      ? InodeFlag.SYMLINK
      : type === S.IFREG || type === S.IFDIR
      ? 0
      : InodeFlag.SPECIAL;
    // Past the fd budget a new node keeps a file handle instead of its fd
    // (as virtiofsd can), so that huge trees do not run out of fds.
    const handle = this.#mountId >= 0 && this.#table.size >= this.#budget()
      ? fileHandleOf(fd, this.#mountId)
      : null;
    const found = this.#table.lookup(key, handle ? NO_FD : fd, flags);
    if (found?.added && handle) this.#fileHandles.store(this.#table.slotOf(found.nodeId), handle);
    if (!found?.added || handle) close(fd);
    if (!found) throw new FuseError(Errno.ENFILE); // the inode table is full
    return { nodeId: found.nodeId, attr };
  }

  /**
   * Out of fds, a name whose node already holds one still resolves: the
   * kernel revalidates the dentries it caches with LOOKUPs, and failing
   * those would make it drop them. Else `outOfFds` is thrown.
   */
  async #lookupHeld(io: BackingIo, dir: Inode, name: string, outOfFds: unknown): Promise<Entry> {
    const [nodeId, attr] = await withScratch((s) =>
      withComponent(name, async (c) => {
        await io.statx(dir.fd, c, AT.SYMLINK_NOFOLLOW, STATX_BASIC_STATS, s.bytes);
        return [this.#table.refHeld(inodeKey(s.view)), attrFromStatx(s.view)] as const;
      })
    );
    if (nodeId === 0) throw outOfFds;
    return { nodeId, attr };
  }

  /** The kernel forgets `nlookup` lookups of `nodeId`: release it at zero. */
  forget(nodeId: number, nlookup: number): void {
    const slot = this.#table.slotOf(nodeId);
    const fd = this.#table.forget(nodeId, nlookup);
    if (fd >= 0) close(fd);
    else if (fd === NO_FD) this.#fileHandles.clear(slot);
  }

  /** Close every held fd (once for the mount, whichever instance is told first). */
  destroy(): void {
    const fds = this.#table.drain();
    for (const fd of fds) close(fd);
    if (fds.length > 0 && this.#mountFd >= 0) close(this.#mountFd);
  }
}

/** The `statfs` f_type of the file system `fd` is on. */
export function fsType(fd: number): number {
  const buf = new Uint8Array(120);
  check(libc.fstatfs(fd, buf), "fstatfs");
  return new DataView(buf.buffer).getUint32(0, true);
}

/** `statfs` f_type of FUSE. */
export const FUSE_SUPER_MAGIC = 0x65735546;

/** `statfs` f_type of tmpfs and of ramfs. */
export const TMPFS_MAGIC = 0x01021994;
export const RAMFS_MAGIC = 0x858458f6;

/** The statfs of the file system `fd` (an O_PATH fd is fine) is on. */
export function statfsOf(fd: number): StatFs {
  const buf = new Uint8Array(120);
  check(libc.fstatfs(fd, buf), "fstatfs");
  const v = new DataView(buf.buffer);
  const n = (o: number) => Number(v.getBigUint64(o, true));
  return {
    bsize: n(8),
    blocks: n(16),
    bfree: n(24),
    bavail: n(32),
    files: n(40),
    ffree: n(48),
    namelen: n(64),
    frsize: n(72),
  };
}

/** Clear setuid/setgid on a just-opened fd (open with O_TRUNC); close it if that fails. */
export function killSuidgidOrClose(fd: number, callerGid: number): void {
  try {
    clearSuidSgid(fd, callerGid);
  } catch (e) {
    close(fd);
    throw e;
  }
}

/** glibc's dev_t for the kernel's 32-bit encoding. */
export function devT(rdev: number): bigint {
  const major = BigInt((rdev >>> 8) & 0xfff);
  const minor = BigInt((rdev & 0xff) | ((rdev >>> 12) & 0xfff00));
  return ((major & 0xfffn) << 8n) | (minor & 0xffn) | ((minor & ~0xffn) << 12n);
}

/** copy_file_range(2) of `length` bytes from `fdIn` at `offIn` to `fdOut` at `offOut`. */
export function copyRange(
  fdIn: number,
  offIn: number,
  fdOut: number,
  offOut: number,
  length: number,
  flags: number,
): number {
  const a = new BigInt64Array([BigInt(offIn)]);
  const b = new BigInt64Array([BigInt(offOut)]);
  return check64(
    libc.copy_file_range(
      fdIn,
      new Uint8Array(a.buffer),
      fdOut,
      new Uint8Array(b.buffer),
      BigInt(length),
      flags,
    ),
    "copy_file_range",
  );
}
