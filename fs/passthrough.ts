/**
 * A passthrough file system, in the manner of libfuse's passthrough_hp: it
 * serves a source directory, forwarding every operation to it.
 *
 * How it stays correct and safe:
 * - A node id names a held `O_PATH | O_NOFOLLOW` fd of the backing object,
 *   keyed by (dev, ino), with the kernel's lookup count; FORGET releases it.
 *   There are no path strings, so renames and hard links need no bookkeeping,
 *   and node ids are never reused. The table lives in shared memory
 *   ({@linkcode SharedInodeTable}), so an instance in every queue thread
 *   serves one mount (`serveQueueThread`, see `passthrough_queue.ts`).
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
import {
  AT,
  check,
  check64,
  clearSuidSgid,
  close,
  cstr,
  errno,
  libc,
  O,
  off,
  S,
  setFdFlags,
} from "../ffi/libc.ts";
import type { BackingIo } from "../ops/backing_io.ts";
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
import { LOCK_TO_EOF, LockType } from "../ops/filesystem.ts";
import { asCaller } from "../ffi/credentials.ts";
import { attrFromStatx } from "./files.ts";
import { fileHandleOf, InodeFileHandles } from "./inode_file_handles.ts";
import { OpenHandles } from "./open_handles.ts";
import { InodeFlag, type InodeKey, NO_FD, SharedInodeTable } from "./shared_inodes.ts";

export { attrFromStatx };
import { fdLimit } from "../ffi/fd_limit.ts";

const STATX_BASIC_STATS = 0x7ff;
const AT_STATX_SYNC_TYPE = 0x6000;
const NOFOLLOW_EMPTY = AT.EMPTY_PATH | AT.SYMLINK_NOFOLLOW;
const UTIME_NOW = (1 << 30) - 1;
const UTIME_OMIT = (1 << 30) - 2;
const XATTR_SIZE_MAX = 65536;
const decoder = new TextDecoder();
const EMPTY = cstr("");

/** One backing object the kernel knows: its held O_PATH fd. */
interface Inode {
  fd: number;
  /** {@linkcode InodeFlag}s. */
  flags: number;
  /** `fd` was reopened from the node's file handle for this call: close it after. */
  temporary: boolean;
}

/**
 * What every instance of one mount's passthrough shares (one per queue
 * thread, and the session's): the inode table.
 */
export interface PassthroughShared {
  /** The {@linkcode SharedInodeTable}'s memory. */
  inodes: SharedArrayBuffer;
  /** The {@linkcode OpenHandles}' memory. */
  handles: SharedArrayBuffer;
  /** The {@linkcode InodeFileHandles}' memory. */
  fileHandles: SharedArrayBuffer;
  /** The source's mount id (name_to_handle_at), or -1 where file handles cannot be used. */
  mountId: number;
  /** The source opened for reading (open_by_handle_at refuses O_PATH fds), or -1. */
  mountFd: number;
}

/** An open directory: a snapshot of its entries, served by index. */
interface DirHandle {
  fd: number;
  entries: { name: string; ino: number; type: number }[] | null;
}

/** The statx of `fd` (an O_PATH fd is fine), through the backing ring. */
async function statxFd(io: BackingIo, fd: number): Promise<DataView> {
  const buf = new Uint8Array(256);
  await io.statx(fd, EMPTY, NOFOLLOW_EMPTY, STATX_BASIC_STATS, buf);
  return new DataView(buf.buffer);
}

/** Attributes of `fd` from statx. */
async function statFd(io: BackingIo, fd: number): Promise<Attr> {
  return attrFromStatx(await statxFd(io, fd));
}

/** The (dev major, dev minor, ino) of a `struct statx`: what names an inode. */
function inodeKey(v: DataView): InodeKey {
  return {
    major: v.getUint32(136, true),
    minor: v.getUint32(140, true),
    ino: Number(v.getBigUint64(32, true)),
  };
}

/** glibc's dev_t for the kernel's 32-bit encoding. */
function devT(rdev: number): bigint {
  const major = BigInt((rdev >>> 8) & 0xfff);
  const minor = BigInt((rdev & 0xff) | ((rdev >>> 12) & 0xfff00));
  return ((major & 0xfffn) << 8n) | (minor & 0xffn) | ((minor & ~0xffn) << 12n);
}

function procPath(fd: number): Uint8Array<ArrayBuffer> {
  return cstr(`/proc/self/fd/${fd}`);
}

/** A name the kernel sent must be one path component. */
function component(name: string): Uint8Array<ArrayBuffer> {
  if (name.length === 0 || name.includes("/")) throw new FuseError(Errno.EINVAL);
  return cstr(name);
}

/**
 * The passthrough file system over a source directory. Starting to serve
 * (`init`) sets the process's umask to 0, as libfuse's passthrough_hp does:
 * the kernel has already applied the caller's.
 */
export class Passthrough implements FileSystem {
  #table: SharedInodeTable;
  /** Handles given to the kernel: checked before any fd a request names is used. */
  #handles: OpenHandles;
  /** This thread's open directories: a snapshot of entries per handle. */
  #dirs = new Map<number, DirHandle>();
  /** File handles of the nodes that hold no fd (past the fd budget). */
  #fileHandles: InodeFileHandles;
  #mountId: number;
  #mountFd: number;
  #fdBudget = 0;
  #budgetCheckedAt = -Infinity;

  /**
   * Serve the directory `source` (its fd is held for the mount's life), or,
   * with `shared`, join the passthrough whose {@linkcode shared} that is
   * (another thread's instance of the same mount).
   */
  constructor(source: string, shared?: PassthroughShared) {
    if (shared) {
      this.#table = new SharedInodeTable(shared.inodes);
      this.#handles = new OpenHandles(shared.handles);
      this.#fileHandles = new InodeFileHandles(shared.fileHandles);
      this.#mountId = shared.mountId;
      this.#mountFd = shared.mountFd;
      return;
    }
    this.#handles = new OpenHandles();
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
    return {
      inodes: this.#table.buffer,
      handles: this.#handles.buffer,
      fileHandles: this.#fileHandles.buffer,
      mountId: this.#mountId,
      mountFd: this.#mountFd,
    };
  }

  /** Number of backing objects held (for tests: FORGET must bring it down). */
  get heldInodes(): number {
    return this.#table.size;
  }

  /** Nodes that hold no fd, only a file handle (past the fd budget). */
  get handleOnlyInodes(): number {
    return this.#fileHandles.count;
  }

  /**
   * The node's fd: the one it holds, or, for a node kept as a file handle,
   * one reopened for this call (`temporary`: see {@linkcode #use}).
   */
  #inode(nodeId: number): Inode {
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
  #use<T>(nodeId: number, fn: (inode: Inode) => T): T {
    const inode = this.#inode(nodeId);
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

  /** Look `name` up in `parent` and count one lookup of the result. */
  async #lookup(io: BackingIo, parent: number, name: string): Promise<Entry> {
    return await this.#use(parent, (dir) => this.#lookupIn(io, parent, dir, name));
  }

  async #lookupIn(io: BackingIo, parent: number, dir: Inode, name: string): Promise<Entry> {
    if (name === "." || (name === ".." && parent === 1)) {
      const attr = await statFd(io, dir.fd);
      if (!this.#table.ref(parent)) throw new FuseError(Errno.ESTALE);
      return { nodeId: parent, attr };
    }
    const fd = await io.openat(dir.fd, component(name), O.PATH | O.NOFOLLOW | O.CLOEXEC, 0);
    let stx: DataView;
    try {
      stx = await statxFd(io, fd);
    } catch (e) {
      close(fd);
      throw e;
    }
    const attr = attrFromStatx(stx);
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
    const found = this.#table.lookup(inodeKey(stx), handle ? NO_FD : fd, flags);
    if (found?.added && handle) this.#fileHandles.store(this.#table.slotOf(found.nodeId), handle);
    if (!found?.added || handle) close(fd);
    if (!found) throw new FuseError(Errno.ENFILE); // the inode table is full
    return { nodeId: found.nodeId, attr };
  }

  lookup(ctx: RequestContext, parent: number, name: string): Promise<Entry> {
    return this.#lookup(ctx.io, parent, name);
  }

  forget(nodeId: number, nlookup: number): void {
    const slot = this.#table.slotOf(nodeId);
    const fd = this.#table.forget(nodeId, nlookup);
    if (fd >= 0) close(fd);
    else if (fd === NO_FD) this.#fileHandles.clear(slot);
  }

  getattr(ctx: RequestContext, nodeId: number): Promise<Attr> {
    return this.#use(nodeId, (inode) => statFd(ctx.io, inode.fd));
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
    else await this.#use(nodeId, (inode) => sx(inode.fd));
    return buf;
  }

  setattr(ctx: RequestContext, nodeId: number, changes: SetAttr): Promise<Attr> {
    return this.#use(nodeId, (inode) => this.#setattr(ctx, inode, changes));
  }

  async #setattr(ctx: RequestContext, inode: Inode, changes: SetAttr): Promise<Attr> {
    const path = procPath(inode.fd);
    const c = changes.fh === undefined
      ? changes
      : { ...changes, fh: this.#handles.file(changes.fh) };
    if (c.mode !== undefined) {
      if (c.fh !== undefined) check(libc.fchmod(c.fh, c.mode & 0o7777), "fchmod");
      else check(libc.fchmodat(AT.FDCWD, path, c.mode & 0o7777, 0), "fchmodat");
    }
    if (c.uid !== undefined || c.gid !== undefined) {
      check(
        libc.fchownat(inode.fd, EMPTY, c.uid ?? 0xffffffff, c.gid ?? 0xffffffff, NOFOLLOW_EMPTY),
        "fchownat",
      );
    }
    if (c.size !== undefined) {
      if (c.fh !== undefined) await ctx.io.ftruncate(c.fh, c.size);
      else {
        const fd = await ctx.io.openat(AT.FDCWD, path, O.WRONLY | O.CLOEXEC, 0);
        try {
          await ctx.io.ftruncate(fd, c.size);
        } finally {
          close(fd);
        }
      }
    }
    // The kernel asks (chown, or truncate by a caller without CAP_FSETID);
    // a root server's own fchownat/ftruncate would keep the bits.
    if (c.killSuidgid && c.mode === undefined) clearSuidSgid(c.fh ?? inode.fd, ctx.gid);
    if (c.atime !== undefined || c.mtime !== undefined) {
      const ts = new Uint8Array(32);
      const v = new DataView(ts.buffer);
      const put = (o: number, t: SetAttr["atime"]) => {
        if (t === undefined) v.setBigInt64(o + 8, BigInt(UTIME_OMIT), true);
        else if (t === "now") v.setBigInt64(o + 8, BigInt(UTIME_NOW), true);
        else {
          v.setBigInt64(o, BigInt(t.sec), true);
          v.setBigInt64(o + 8, BigInt(t.nsec), true);
        }
      };
      put(0, c.atime);
      put(16, c.mtime);
      // The magic link resolves to the inode itself, also a symlink's (a
      // jump through /proc is never followed further), so links get times too.
      if (c.fh !== undefined) check(libc.futimens(c.fh, ts), "futimens");
      else check(libc.utimensat(AT.FDCWD, path, ts, 0), "utimensat");
    }
    return statFd(ctx.io, inode.fd);
  }

  /**
   * access(2) for the caller, from the backing modes. The kernel asks only
   * when default_permissions is off; supplementary groups are not known to
   * FUSE, so only the caller's primary group counts.
   */
  async access(ctx: RequestContext, nodeId: number, mask: number): Promise<void> {
    const a = await this.#use(nodeId, (inode) => statFd(ctx.io, inode.fd));
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
    const buf = new Uint8Array(4096);
    const n = this.#use(
      nodeId,
      (inode) => check64(libc.readlinkat(inode.fd, EMPTY, buf, 4096n), "readlinkat"),
    );
    return buf.slice(0, n);
  }

  mknod(
    ctx: RequestContext,
    parent: number,
    name: string,
    mode: number,
    rdev: number,
  ): Promise<Entry> {
    // io_uring has no mknodat: a direct call, as the caller.
    this.#use(
      parent,
      (dir) =>
        asCaller(
          ctx,
          () => check(libc.mknodat(dir.fd, component(name), mode, devT(rdev)), "mknodat"),
        ),
    );
    return this.#lookup(ctx.io, parent, name);
  }

  async mkdir(ctx: RequestContext, parent: number, name: string, mode: number): Promise<Entry> {
    await this.#use(parent, (dir) => ctx.io.mkdirat(dir.fd, component(name), mode, ctx));
    return this.#lookup(ctx.io, parent, name);
  }

  async symlink(
    ctx: RequestContext,
    parent: number,
    name: string,
    target: string,
  ): Promise<Entry> {
    await this.#use(
      parent,
      (dir) => ctx.io.symlinkat(cstr(target), dir.fd, component(name), ctx),
    );
    return this.#lookup(ctx.io, parent, name);
  }

  async link(
    ctx: RequestContext,
    nodeId: number,
    newParent: number,
    newName: string,
  ): Promise<Entry> {
    await this.#use(nodeId, (inode) =>
      this.#use(newParent, async (dir) => {
        try {
          // AT_EMPTY_PATH on an O_PATH fd links the inode itself (it needs
          // CAP_DAC_READ_SEARCH, which root has).
          await ctx.io.linkat(inode.fd, EMPTY, dir.fd, component(newName), AT.EMPTY_PATH);
        } catch (e) {
          if (!(e instanceof SystemError) || e.errno !== Errno.ENOENT) throw e;
          // Without the capability: /proc resolves to the same inode.
          const proc = procPath(inode.fd);
          await ctx.io.linkat(AT.FDCWD, proc, dir.fd, component(newName), AT.SYMLINK_FOLLOW);
        }
      }));
    return this.#lookup(ctx.io, newParent, newName);
  }

  unlink(ctx: RequestContext, parent: number, name: string): Promise<void> {
    return this.#use(parent, (dir) => ctx.io.unlinkat(dir.fd, component(name), 0));
  }

  rmdir(ctx: RequestContext, parent: number, name: string): Promise<void> {
    return this.#use(parent, (dir) => ctx.io.unlinkat(dir.fd, component(name), AT.REMOVEDIR));
  }

  rename(
    ctx: RequestContext,
    parent: number,
    name: string,
    newParent: number,
    newName: string,
    flags: number,
  ): Promise<void> {
    return this.#use(parent, (from) =>
      this.#use(
        newParent,
        (to) => ctx.io.renameat(from.fd, component(name), to.fd, component(newName), flags),
      ));
  }

  open(ctx: RequestContext, nodeId: number, flags: number): Promise<OpenReply> {
    return this.#use(nodeId, (inode) => this.#open(ctx, inode, flags));
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
    const fd = await this.#use(
      parent,
      (dir) => ctx.io.openat(dir.fd, component(name), all, mode, ctx),
    );
    if (!(flags & O.NONBLOCK)) setFdFlags(fd, flags & ~O.NONBLOCK);
    if (ctx.killSuidgid && (flags & O.TRUNC)) killSuidgidOrClose(fd, ctx.gid);
    let entry: Entry;
    try {
      entry = await this.#lookup(ctx.io, parent, name);
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
    const f = flockStruct(lock.type, lock.start, lock.end);
    check(libc.fcntl(this.#handles.file(fh), F_OFD_GETLK, f), "fcntl F_OFD_GETLK");
    const v = new DataView(f.buffer);
    const type = v.getInt16(0, true);
    if (type === LockType.F_UNLCK) return { ...lock, type };
    const start = Number(v.getBigInt64(8, true));
    const len = Number(v.getBigInt64(16, true));
    // A process's lock names its pid; an OFD lock has none (l_pid -1).
    const pid = Math.max(v.getInt32(24, true), 0);
    return { type, start, end: len === 0 ? LOCK_TO_EOF : start + len - 1, pid };
  }

  setlk(
    ctx: RequestContext,
    _nodeId: number,
    fh: number,
    _owner: bigint,
    lock: FileLock,
    wait: boolean,
  ): Promise<void> {
    const fd = this.#handles.file(fh);
    const f = flockStruct(lock.type, lock.start, lock.end);
    return untilFree(ctx, wait, () => libc.fcntl(fd, F_OFD_SETLK, f), "fcntl F_OFD_SETLK");
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
    const fd = this.#handles.file(fh);
    const op = type === LockType.F_UNLCK ? LOCK_UN : type === LockType.F_RDLCK ? LOCK_SH : LOCK_EX;
    return untilFree(ctx, wait, () => libc.flock(fd, op | LOCK_NB), "flock");
  }

  release(ctx: RequestContext, _nodeId: number, fh: number): Promise<void> {
    return ctx.io.close(this.#handles.releaseFile(fh));
  }

  fsync(ctx: RequestContext, _nodeId: number, fh: number, datasync: boolean): Promise<void> {
    return ctx.io.fsync(this.#handles.file(fh), datasync);
  }

  async opendir(ctx: RequestContext, nodeId: number): Promise<OpenReply> {
    const fd = await this.#use(
      nodeId,
      (inode) => ctx.io.openat(AT.FDCWD, procPath(inode.fd), O.RDONLY | O.DIRECTORY | O.CLOEXEC, 0),
    );
    // The handle names the fd, and is never reused: another queue thread
    // may serve the next readdir, and keeps a snapshot of its own.
    try {
      return { fh: this.#handles.addDir(fd, this.#table.unique()) };
    } catch (e) {
      close(fd);
      throw e;
    }
  }

  /** The directory's entries, read once per pass from offset 0 (getdents64). */
  #entries(fh: number, offset: number): { name: string; ino: number; type: number }[] {
    const fd = this.#handles.dir(fh); // live, whichever thread opened it
    let dir = this.#dirs.get(fh);
    if (!dir) {
      dir = { fd, entries: null };
      this.#dirs.set(fh, dir);
      // Snapshots of handles released through another thread are never
      // used again: keep only the most recent.
      if (this.#dirs.size > 256) this.#dirs.delete(this.#dirs.keys().next().value!);
    }
    if (dir.entries && offset !== 0) return dir.entries;
    check64(libc.lseek(dir.fd, 0n, 0), "lseek");
    const entries: { name: string; ino: number; type: number }[] = [];
    const buf = new Uint8Array(65536);
    const view = new DataView(buf.buffer);
    const ptr = Deno.UnsafePointer.of(buf);
    for (;;) {
      const n = check(libc.getdents64(dir.fd, ptr, BigInt(buf.length)), "getdents64");
      if (n === 0) break;
      for (let at = 0; at < n;) {
        const reclen = view.getUint16(at + 16, true);
        const end = buf.indexOf(0, at + 19);
        entries.push({
          ino: Number(view.getBigUint64(at, true)),
          type: buf[at + 18] << 12,
          name: decoder.decode(buf.subarray(at + 19, end)),
        });
        at += reclen;
      }
    }
    dir.entries = entries;
    return entries;
  }

  readdir(
    _ctx: RequestContext,
    _nodeId: number,
    fh: number,
    offset: number,
    list: { add(name: string, ino: number, mode: number, offset: number): boolean },
  ): void {
    const entries = this.#entries(fh, offset);
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
    const entries = this.#entries(fh, offset);
    for (let i = offset; i < entries.length; i++) {
      const e = entries[i];
      if (e.name === "." || e.name === "..") {
        // No lookup count for these: node id 0 tells the kernel so.
        if (!list.add(e.name, { nodeId: 0, attr: { ino: e.ino, mode: e.type } }, i + 1)) break;
        continue;
      }
      let entry: Entry;
      try {
        entry = await this.#lookup(ctx.io, nodeId, e.name);
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
    const type = fsType(this.#table.fd(1));
    return type === TMPFS_MAGIC || type === RAMFS_MAGIC;
  }

  statfs(_ctx: RequestContext, nodeId: number): StatFs {
    const buf = new Uint8Array(120);
    this.#use(nodeId, (inode) => check(libc.fstatfs(inode.fd, buf), "fstatfs"));
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

  /**
   * Run `fn` with the node's `/proc/self/fd/N` path: the inode itself,
   * symlinks included (the kernel stops at the inode a magic link jumps to,
   * and applies its own rules: no `user.*` on links).
   */
  #xattr<T>(nodeId: number, fn: (path: Uint8Array<ArrayBuffer>) => T): T {
    return this.#use(nodeId, (inode) => fn(procPath(inode.fd)));
  }

  setxattr(
    _ctx: RequestContext,
    nodeId: number,
    name: string,
    value: Uint8Array,
    flags: number,
  ): void {
    const v = new Uint8Array(value);
    this.#xattr(
      nodeId,
      (path) => check(libc.setxattr(path, cstr(name), v, BigInt(v.length), flags | 0), "setxattr"),
    );
  }

  getxattr(_ctx: RequestContext, nodeId: number, name: string): Uint8Array {
    const buf = new Uint8Array(XATTR_SIZE_MAX);
    const n = this.#xattr(
      nodeId,
      (path) => check64(libc.getxattr(path, cstr(name), buf, BigInt(buf.length)), "getxattr"),
    );
    return buf.slice(0, n);
  }

  listxattr(_ctx: RequestContext, nodeId: number): string[] {
    const buf = new Uint8Array(XATTR_SIZE_MAX);
    const n = this.#xattr(
      nodeId,
      (path) => check64(libc.listxattr(path, buf, BigInt(buf.length)), "listxattr"),
    );
    return n === 0 ? [] : decoder.decode(buf.subarray(0, n - 1)).split("\0");
  }

  removexattr(_ctx: RequestContext, nodeId: number, name: string): void {
    this.#xattr(nodeId, (path) => check(libc.removexattr(path, cstr(name)), "removexattr"));
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
    const a = new BigInt64Array([BigInt(offIn)]);
    const b = new BigInt64Array([BigInt(offOut)]);
    // A direct call on the serving thread: copy at most COPY_CHUNK per
    // request; copy_file_range(2) callers loop over short copies.
    length = Math.min(length, COPY_CHUNK);
    return check64(
      libc.copy_file_range(
        this.#handles.file(fhIn),
        new Uint8Array(a.buffer),
        this.#handles.file(fhOut),
        new Uint8Array(b.buffer),
        BigInt(length),
        flags,
      ),
      "copy_file_range",
    );
  }

  destroy(): void {
    // Once for the mount, whichever instance is told first.
    const fds = this.#table.drain();
    for (const fd of fds) close(fd);
    if (fds.length > 0 && this.#mountFd >= 0) close(this.#mountFd);
    this.#dirs.clear();
  }
}

/** Clear setuid/setgid on a just-opened fd (open with O_TRUNC); close it if that fails. */
function killSuidgidOrClose(fd: number, callerGid: number): void {
  try {
    clearSuidSgid(fd, callerGid);
  } catch (e) {
    close(fd);
    throw e;
  }
}

const F_OFD_GETLK = 36;
const F_OFD_SETLK = 37;
const LOCK_SH = 1, LOCK_EX = 2, LOCK_NB = 4, LOCK_UN = 8;

/** A `struct flock` (x86-64 layout) for `type` over bytes `start..end` (inclusive). */
function flockStruct(type: number, start: number, end: number): Uint8Array<ArrayBuffer> {
  const f = new Uint8Array(32);
  const v = new DataView(f.buffer);
  v.setInt16(0, type, true); // l_whence 0: SEEK_SET; l_pid 0, as OFD locks require
  v.setBigInt64(8, BigInt(start), true);
  v.setBigInt64(16, end >= LOCK_TO_EOF ? 0n : BigInt(end - start + 1), true);
  return f;
}

/**
 * Try `attempt` (a non-blocking lock call) until it succeeds; when the lock
 * is held elsewhere, fail with EAGAIN, or with `wait` try again (backing off
 * to every 50 ms) until the request is interrupted (EINTR). The serving
 * thread never blocks in the kernel for a lock.
 */
async function untilFree(
  ctx: RequestContext,
  wait: boolean,
  attempt: () => number,
  call: string,
): Promise<void> {
  for (let delay = 1;; delay = Math.min(delay * 2, 50)) {
    if (attempt() === 0) return;
    const e = errno();
    if (e !== Errno.EAGAIN && e !== Errno.EACCES) throw new SystemError(call, e);
    if (!wait) throw new SystemError(call, Errno.EAGAIN);
    const signal = ctx.signal;
    signal.throwIfAborted();
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, delay);
      signal.addEventListener("abort", done);
    });
    signal.throwIfAborted();
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

/** The `statfs` f_type of the file system `fd` is on. */
function fsType(fd: number): number {
  const buf = new Uint8Array(120);
  check(libc.fstatfs(fd, buf), "fstatfs");
  return new DataView(buf.buffer).getUint32(0, true);
}

/** `statfs` f_type of FUSE. */
const FUSE_SUPER_MAGIC = 0x65735546;

/** `statfs` f_type of tmpfs and of ramfs. */
const TMPFS_MAGIC = 0x01021994;
const RAMFS_MAGIC = 0x858458f6;
