/**
 * A passthrough file system, in the manner of libfuse's passthrough_hp: it
 * serves a source directory, forwarding every operation to it.
 *
 * How it stays correct and safe:
 * - A node id names a held `O_PATH | O_NOFOLLOW` fd of the backing object,
 *   keyed by (dev, ino), with the kernel's lookup count; FORGET releases it
 *   (`source_inodes.ts`). There are no path strings, so renames and hard
 *   links need no bookkeeping, and node ids are never reused. The table
 *   lives in shared memory, so an instance in every queue thread serves one
 *   mount (`serveQueueThread`, see `passthrough_queue.ts`).
 * - Every backing call is relative to a held fd: `*at()` on the parent's fd
 *   with the plain name, or `/proc/self/fd/N`, which the kernel resolves to the
 *   inode itself rather than walking a path. Nothing follows a symlink on the
 *   server side, and `..` at the root stays at the root.
 * - Open files name their fd as `backingFd`, so the session serves reads
 *   and writes itself: on the io_uring transport each queue's own thread
 *   moves the data by READ_FIXED / WRITE_FIXED.
 * - Objects created for a caller belong to the caller: when running as root
 *   the creating calls run under the caller's fsuid/fsgid.
 *
 * @module
 */

import { Errno, SystemError } from "../ffi/errno.ts";
import { asCaller } from "../ffi/credentials.ts";
import { AT, check, check64, close, cstr, libc, O, off, S, setFdFlags } from "../ffi/libc.ts";
import { FuseError } from "../ops/error.ts";
import type {
  Attr,
  CreateReply,
  Entry,
  FdSink,
  FdSource,
  FileLock,
  FileSystem,
  OpenReply,
  RequestContext,
  SetAttr,
  StatFs,
} from "../ops/filesystem.ts";
import { DirectorySnapshots } from "./directory_snapshots.ts";
import { attrFromStatx } from "./files.ts";
import { flockFd, setLock, testLock } from "./locks.ts";
import { OpenHandles } from "./open_handles.ts";
import { setAttributes } from "./set_attributes.ts";
import { getXattr, listXattrs, removeXattr, setXattr } from "./xattrs.ts";
import { InodeFlag } from "./shared_inodes.ts";
import {
  copyRange,
  devT,
  EMPTY,
  fsType,
  type Inode,
  killSuidgidOrClose,
  NOFOLLOW_EMPTY,
  procPath,
  RAMFS_MAGIC,
  SourceInodes,
  statFd,
  statfsOf,
  STATX_BASIC_STATS,
  TMPFS_MAGIC,
} from "./source_inodes.ts";

export { attrFromStatx };

const AT_STATX_SYNC_TYPE = 0x6000;
/** readlinkat's buffer (PATH_MAX), one per thread: the call is synchronous and copied out. */
const linkScratch = new Uint8Array(4096);

/**
 * What every instance of one mount's passthrough shares (one per queue
 * thread, and the session's): the inode table.
 */
export interface PassthroughShared {
  /** The inode table's memory (see `source_inodes.ts`). */
  inodes: SharedArrayBuffer;
  /** The file handles' memory, of nodes past the fd budget. */
  fileHandles: SharedArrayBuffer;
  /** The source's mount id (name_to_handle_at), or -1 where file handles cannot be used. */
  mountId: number;
  /** The source opened for reading (open_by_handle_at refuses O_PATH fds), or -1. */
  mountFd: number;
  /** The {@linkcode OpenHandles}' memory. */
  handles: SharedArrayBuffer;
}

/**
 * The passthrough file system over a source directory. Starting to serve
 * (`init`) sets the process's umask to 0, as libfuse's passthrough_hp does:
 * the kernel has already applied the caller's.
 */
export class Passthrough implements FileSystem {
  /** The backing objects the kernel knows, by node id. */
  #nodes: SourceInodes;
  /** Handles given to the kernel: checked before any fd a request names is used. */
  #handles: OpenHandles;
  /** This thread's open directories: a snapshot of entries per handle. */
  #dirs = new DirectorySnapshots();

  /**
   * Serve the directory `source` (its fd is held for the mount's life), or,
   * with `shared`, join the passthrough whose {@linkcode shared} that is
   * (another thread's instance of the same mount).
   */
  constructor(source: string, shared?: PassthroughShared) {
    this.#nodes = new SourceInodes(source, shared);
    this.#handles = new OpenHandles(shared?.handles);
  }

  /**
   * The kernel has already masked every mode it sends (create, mkdir,
   * mknod) with the caller's umask; the backing calls must not mask them
   * again with this process's. A umask belongs to the whole process (every
   * serving thread and io_uring's workers share it), so the passthrough sets
   * the process's to 0 when it starts serving, as libfuse's passthrough_hp
   * does.
   */
  init(): void {
    libc.umask(0);
  }

  /** What another thread's instance needs to serve the same mount. */
  get shared(): PassthroughShared {
    return { ...this.#nodes.shared, handles: this.#handles.buffer };
  }

  /** Number of backing objects held (for tests: FORGET must bring it down). */
  get heldInodes(): number {
    return this.#nodes.size;
  }

  /** Nodes that hold no fd, only a file handle (past the fd budget). */
  get handleOnlyInodes(): number {
    return this.#nodes.handleOnly;
  }

  lookup(ctx: RequestContext, parent: number, name: string): Promise<Entry> {
    return this.#nodes.lookup(ctx.io, parent, name);
  }

  forget(nodeId: number, nlookup: number): void {
    this.#nodes.forget(nodeId, nlookup);
  }

  getattr(ctx: RequestContext, nodeId: number): Promise<Attr> {
    return this.#nodes.use(nodeId, (inode) => statFd(ctx.io, inode.fd));
  }

  async statx(
    ctx: RequestContext,
    nodeId: number,
    fh: number | undefined,
    flags: number,
    mask: number,
  ): Promise<Uint8Array> {
    const buf = new Uint8Array(256);
    // The caller's AT_STATX_* sync flags pass through; the node itself is never followed.
    const how = NOFOLLOW_EMPTY | (flags & AT_STATX_SYNC_TYPE);
    const sx = (fd: number) => ctx.io.statx(fd, EMPTY, how, (mask | STATX_BASIC_STATS) >>> 0, buf);
    if (fh !== undefined) await sx(this.#handles.file(fh));
    else await this.#nodes.use(nodeId, (inode) => sx(inode.fd));
    return buf;
  }

  setattr(ctx: RequestContext, nodeId: number, changes: SetAttr): Promise<Attr> {
    const c = changes.fh === undefined
      ? changes
      : { ...changes, fh: this.#handles.file(changes.fh) };
    return this.#nodes.use(nodeId, async (inode) => {
      await setAttributes(ctx, inode.fd, c);
      return statFd(ctx.io, inode.fd);
    });
  }

  /**
   * access(2) for the caller, from the backing modes. The kernel asks only
   * when default_permissions is off; supplementary groups are not known to
   * FUSE, so only the caller's primary group counts.
   */
  async access(ctx: RequestContext, nodeId: number, mask: number): Promise<void> {
    const a = await this.#nodes.use(nodeId, (inode) => statFd(ctx.io, inode.fd));
    const want = mask & 0o7;
    if (ctx.uid === 0) {
      // Root may read and write anything, and execute what anyone may.
      const dir = (a.mode & S.IFMT) === S.IFDIR;
      if ((want & 1) && !dir && (a.mode & 0o111) === 0) throw new FuseError(Errno.EACCES);
      return;
    }
    const bits = ctx.uid === a.uid ? a.mode >> 6 : ctx.gid === a.gid ? a.mode >> 3 : a.mode;
    if ((want & ~bits) !== 0) throw new FuseError(Errno.EACCES);
  }

  readlink(_ctx: RequestContext, nodeId: number): Uint8Array {
    const buf = linkScratch;
    const n = this.#nodes.use(
      nodeId,
      (inode) => check64(libc.readlinkat(inode.fd, EMPTY, buf, 4096n), "readlinkat"),
    );
    return buf.slice(0, n);
  }

  async mknod(
    ctx: RequestContext,
    parent: number,
    name: string,
    mode: number,
    rdev: number,
  ): Promise<Entry> {
    // io_uring has no mknodat: a direct call, as the caller.
    await this.#nodes.at(parent, name, (dir, c) =>
      Promise.resolve(
        asCaller(ctx, () => check(libc.mknodat(dir, c, mode, devT(rdev)), "mknodat")),
      ));
    return this.#nodes.lookup(ctx.io, parent, name);
  }

  async mkdir(ctx: RequestContext, parent: number, name: string, mode: number): Promise<Entry> {
    await this.#nodes.at(parent, name, (dir, c) => ctx.io.mkdirat(dir, c, mode, ctx));
    return this.#nodes.lookup(ctx.io, parent, name);
  }

  async symlink(
    ctx: RequestContext,
    parent: number,
    name: string,
    target: string,
  ): Promise<Entry> {
    await this.#nodes.at(parent, name, (dir, c) => ctx.io.symlinkat(cstr(target), dir, c, ctx));
    return this.#nodes.lookup(ctx.io, parent, name);
  }

  async link(
    ctx: RequestContext,
    nodeId: number,
    newParent: number,
    newName: string,
  ): Promise<Entry> {
    await this.#nodes.use(nodeId, (inode) =>
      this.#nodes.at(newParent, newName, async (dir, c) => {
        try {
          // AT_EMPTY_PATH on an O_PATH fd links the inode itself (it needs
          // CAP_DAC_READ_SEARCH, which root has).
          await ctx.io.linkat(inode.fd, EMPTY, dir, c, AT.EMPTY_PATH);
        } catch (e) {
          if (!(e instanceof SystemError) || e.errno !== Errno.ENOENT) throw e;
          // Without the capability: /proc resolves to the same inode.
          await ctx.io.linkat(AT.FDCWD, procPath(inode.fd), dir, c, AT.SYMLINK_FOLLOW);
        }
      }));
    return this.#nodes.lookup(ctx.io, newParent, newName);
  }

  unlink(ctx: RequestContext, parent: number, name: string): Promise<void> {
    return this.#nodes.at(parent, name, (dir, c) => ctx.io.unlinkat(dir, c, 0));
  }

  rmdir(ctx: RequestContext, parent: number, name: string): Promise<void> {
    return this.#nodes.at(parent, name, (dir, c) => ctx.io.unlinkat(dir, c, AT.REMOVEDIR));
  }

  rename(
    ctx: RequestContext,
    parent: number,
    name: string,
    newParent: number,
    newName: string,
    flags: number,
  ): Promise<void> {
    return this.#nodes.at(
      parent,
      name,
      (from, c) =>
        this.#nodes.at(newParent, newName, (to, n) => ctx.io.renameat(from, c, to, n, flags)),
    );
  }

  open(ctx: RequestContext, nodeId: number, flags: number): Promise<OpenReply> {
    return this.#nodes.use(nodeId, (inode) => this.#open(ctx, inode, flags));
  }

  async #open(ctx: RequestContext, inode: Inode, flags: number): Promise<OpenReply> {
    // The kernel opens FIFOs and devices itself and never sends OPEN for
    // them: one that arrives would block the serving thread, or reach a device.
    if (inode.flags & InodeFlag.SPECIAL) throw new FuseError(Errno.EINVAL);
    // O_NOFOLLOW would refuse the /proc magic link itself; the kernel never
    // opens a symlink node (it follows client-side), so this stays safe.
    const clean = (flags & ~(O.CREAT | O.EXCL | O.NOCTTY | O.NOFOLLOW)) | O.CLOEXEC;
    const fd = await ctx.io.openat(AT.FDCWD, procPath(inode.fd), clean, 0);
    if (ctx.killSuidgid && (flags & O.TRUNC)) killSuidgidOrClose(fd, ctx.gid);
    return { fh: this.#issue(fd), backingFd: fd, parallelDirectWrites: true };
  }

  async create(
    ctx: RequestContext,
    parent: number,
    name: string,
    mode: number,
    flags: number,
  ): Promise<CreateReply> {
    // O_NONBLOCK: a FIFO made behind the kernel's back under this name must
    // not block the serving thread; regular files get their flags back below.
    const all = flags | O.CREAT | O.NOFOLLOW | O.CLOEXEC | O.NONBLOCK;
    const fd = await this.#nodes.at(
      parent,
      name,
      (dir, c) => ctx.io.openat(dir, c, all, mode, ctx),
    );
    if (!(flags & O.NONBLOCK)) setFdFlags(fd, flags & ~O.NONBLOCK);
    if (ctx.killSuidgid && (flags & O.TRUNC)) killSuidgidOrClose(fd, ctx.gid);
    let entry: Entry;
    try {
      entry = await this.#nodes.lookup(ctx.io, parent, name);
    } catch (e) {
      close(fd);
      throw e;
    }
    return { entry, fh: this.#issue(fd), backingFd: fd, parallelDirectWrites: true };
  }

  /** Make `fd` a live file handle (closing it if it cannot be one). */
  #issue(fd: number): number {
    try {
      return this.#handles.addFile(fd);
    } catch (e) {
      close(fd);
      throw e;
    }
  }

  // Handles carry backingFd, so the session serves their reads and writes;
  // these answer for any handle the session's table could not take.
  read(
    _ctx: RequestContext,
    _nodeId: number,
    fh: number,
    offset: number,
    size: number,
  ): FdSource {
    return { fd: this.#handles.file(fh), offset, length: size };
  }

  write(_ctx: RequestContext, _nodeId: number, fh: number, offset: number): FdSink {
    return { fd: this.#handles.file(fh), offset };
  }

  flush(ctx: RequestContext, _nodeId: number, fh: number): Promise<void> {
    const fd = this.#handles.file(fh);
    // close() of a duplicate reports delayed write errors (NFS) as close(2) would.
    return ctx.io.close(check(libc.dup(fd), "dup"));
  }

  /**
   * POSIX locks are open file description (OFD) locks on the handle's
   * backing fd, so they conflict with processes using the source directly.
   * They follow OFD rules rather than a process's: two opens of a file
   * conflict even in one process, and a lock lasts until the last close of
   * its open file (RELEASE), not the first close(2) by its process.
   */
  getlk(
    _ctx: RequestContext,
    _nodeId: number,
    fh: number,
    _owner: bigint,
    lock: FileLock,
  ): FileLock {
    return testLock(this.#handles.file(fh), lock);
  }

  setlk(
    ctx: RequestContext,
    _nodeId: number,
    fh: number,
    _owner: bigint,
    lock: FileLock,
    wait: boolean,
  ): Promise<void> {
    return setLock(ctx, this.#handles.file(fh), lock, wait);
  }

  /** flock(2) on the handle's backing fd: the same open file description semantics. */
  flock(
    ctx: RequestContext,
    _nodeId: number,
    fh: number,
    _owner: bigint,
    type: number,
    wait: boolean,
  ): Promise<void> {
    return flockFd(ctx, this.#handles.file(fh), type, wait);
  }

  release(ctx: RequestContext, _nodeId: number, fh: number): Promise<void> {
    return ctx.io.close(this.#handles.releaseFile(fh));
  }

  fsync(ctx: RequestContext, _nodeId: number, fh: number, datasync: boolean): Promise<void> {
    return ctx.io.fsync(this.#handles.file(fh), datasync);
  }

  async opendir(ctx: RequestContext, nodeId: number): Promise<OpenReply> {
    const fd = await this.#nodes.use(
      nodeId,
      (inode) => ctx.io.openat(AT.FDCWD, procPath(inode.fd), O.RDONLY | O.DIRECTORY | O.CLOEXEC, 0),
    );
    // The handle names the fd, and is never reused: another queue thread
    // may serve the next readdir, and keeps a snapshot of its own.
    try {
      return { fh: this.#handles.addDir(fd, this.#nodes.unique()) };
    } catch (e) {
      close(fd);
      throw e;
    }
  }

  readdir(
    _ctx: RequestContext,
    _nodeId: number,
    fh: number,
    offset: number,
    list: { add(name: string, ino: number, mode: number, offset: number): boolean },
  ): void {
    const entries = this.#dirs.entries(fh, this.#handles.dir(fh), offset);
    for (let i = offset; i < entries.length; i++) {
      const e = entries[i];
      if (!list.add(e.name, e.ino, e.type, i + 1)) break;
    }
  }

  async readdirplus(
    ctx: RequestContext,
    nodeId: number,
    fh: number,
    offset: number,
    list: { add(name: string, entry: Entry, offset: number): boolean },
  ): Promise<void> {
    const entries = this.#dirs.entries(fh, this.#handles.dir(fh), offset);
    for (let i = offset; i < entries.length; i++) {
      const e = entries[i];
      if (e.name === "." || e.name === "..") {
        // No lookup count for these: node id 0 tells the kernel so.
        if (!list.add(e.name, { nodeId: 0, attr: { ino: e.ino, mode: e.type } }, i + 1)) break;
        continue;
      }
      let entry: Entry;
      try {
        entry = await this.#nodes.lookup(ctx.io, nodeId, e.name);
      } catch (err) {
        const errno = (err as SystemError | FuseError).errno;
        if (errno === Errno.ENOENT) continue; // removed since
        if (errno !== Errno.EMFILE && errno !== Errno.ENFILE) throw err;
        // Out of fds: the name without attributes (node id 0, a plain
        // entry to the kernel); its own LOOKUP will get the error.
        entry = { nodeId: 0, attr: { ino: e.ino, mode: e.type } };
      }
      if (!list.add(e.name, entry, i + 1)) {
        // Not sent: the kernel will not count it.
        if (entry.nodeId !== 0) this.forget(entry.nodeId, 1);
        break;
      }
    }
  }

  releasedir(_ctx: RequestContext, _nodeId: number, fh: number): void {
    this.#dirs.delete(fh);
    close(this.#handles.releaseDir(fh));
  }

  fsyncdir(ctx: RequestContext, _nodeId: number, fh: number, datasync: boolean): Promise<void> {
    return ctx.io.fsync(this.#handles.dir(fh), datasync);
  }

  /**
   * Whether the source directory lives on a memory file system (tmpfs,
   * ramfs), where no backing call waits for a device: the command line then
   * makes backing calls directly rather than through io_uring (see
   * `MountOptions.backingIo`). File systems mounted below the
   * source are not looked at.
   */
  get memoryBacked(): boolean {
    const type = fsType(this.#nodes.rootFd);
    return type === TMPFS_MAGIC || type === RAMFS_MAGIC;
  }

  statfs(_ctx: RequestContext, nodeId: number): StatFs {
    return this.#nodes.use(nodeId, (inode) => statfsOf(inode.fd));
  }

  /**
   * Run `fn` with the node's `/proc/self/fd/N` path: the inode itself,
   * symlinks included (the kernel stops at the inode a magic link jumps to,
   * and applies its own rules: no `user.*` on links).
   */
  #xattr<T>(nodeId: number, fn: (path: Uint8Array<ArrayBuffer>) => T): T {
    return this.#nodes.use(nodeId, (inode) => fn(procPath(inode.fd)));
  }

  setxattr(
    _ctx: RequestContext,
    nodeId: number,
    name: string,
    value: Uint8Array,
    flags: number,
  ): void {
    this.#xattr(nodeId, (path) => setXattr(path, name, value, flags));
  }

  getxattr(_ctx: RequestContext, nodeId: number, name: string): Uint8Array {
    return this.#xattr(nodeId, (path) => getXattr(path, name));
  }

  listxattr(_ctx: RequestContext, nodeId: number): string[] {
    return this.#xattr(nodeId, listXattrs);
  }

  removexattr(_ctx: RequestContext, nodeId: number, name: string): void {
    this.#xattr(nodeId, (path) => removeXattr(path, name));
  }

  fallocate(
    ctx: RequestContext,
    _nodeId: number,
    fh: number,
    offset: number,
    length: number,
    mode: number,
  ): Promise<void> {
    return ctx.io.fallocate(this.#handles.file(fh), mode, offset, length);
  }

  lseek(_ctx: RequestContext, _nodeId: number, fh: number, offset: number, whence: number): number {
    return check64(libc.lseek(this.#handles.file(fh), off(offset), whence | 0), "lseek");
  }

  copyFileRange(
    _ctx: RequestContext,
    _nodeIn: number,
    fhIn: number,
    offIn: number,
    _nodeOut: number,
    fhOut: number,
    offOut: number,
    length: number,
    flags: number,
  ): number {
    if (flags !== flags >>> 0) throw new FuseError(Errno.EINVAL);
    // A direct call on the serving thread: copy at most COPY_CHUNK per
    // request; copy_file_range(2) callers loop over short copies.
    const n = Math.min(length, COPY_CHUNK);
    return copyRange(this.#handles.file(fhIn), offIn, this.#handles.file(fhOut), offOut, n, flags);
  }

  destroy(): void {
    this.#nodes.destroy();
    this.#dirs.clear();
  }
}

/**
 * The operations that change the source, for a subclass that refuses or
 * watches them all (a read-only passthrough; see `passthrough.ts`). Opening
 * for writing is `open` with O_WRONLY, O_RDWR or O_TRUNC.
 */
export const CHANGING_OPERATIONS = [
  "create",
  "mkdir",
  "mknod",
  "symlink",
  "link",
  "unlink",
  "rmdir",
  "rename",
  "setattr",
  "setxattr",
  "removexattr",
  "fallocate",
  "copyFileRange",
] as const satisfies readonly (keyof Passthrough)[];

/** The most one COPY_FILE_RANGE copies (the serving thread waits for it). */
export const COPY_CHUNK = 4 << 20;
