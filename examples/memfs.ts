/**
 * An in-memory file system with every operation it can support: the
 * reference for authors whose data is not in files. Files, directories,
 * symlinks, hard links, device nodes and FIFOs, renames (with NOREPLACE
 * and EXCHANGE), extended attributes, times, sparse writes, fallocate and
 * SEEK_DATA/SEEK_HOLE. The kernel checks permissions from the modes
 * (default_permissions); locks are left to the kernel.
 *
 *     deno run --allow-ffi examples/memfs.ts MOUNTPOINT [-d] [-o opts]
 *
 * @module
 */

import {
  type Attr,
  Errno,
  type FileSystem,
  FuseError,
  type RequestContext,
  S,
  serveFromCommandLine,
  type SetAttr,
} from "../mod.ts";

/** One object: what `stat` shows, and its content by type. */
interface Node {
  attr: Attr;
  /** A regular file's bytes (its size is `attr.size`). */
  data?: Uint8Array;
  /** A directory's names. */
  children?: Map<string, number>;
  /** A symlink's target. */
  target?: Uint8Array;
  xattrs: Map<string, Uint8Array>;
  /** The kernel's lookup count: a node without links goes when it reaches 0. */
  lookups: number;
}

const fail = (errno: number): never => {
  throw new FuseError(errno);
};
const RENAME_NOREPLACE = 1, RENAME_EXCHANGE = 2;
const XATTR_CREATE = 1, XATTR_REPLACE = 2;
const SEEK_DATA = 3, SEEK_HOLE = 4;
const O_TRUNC = 0o1000;

/** Names are at most NAME_MAX (255) bytes, as on every Linux file system. */
function checkName(name: string): void {
  if (name.length > 255 || new TextEncoder().encode(name).length > 255) fail(Errno.ENAMETOOLONG);
}

function now(): { sec: number; nsec: number } {
  const ms = Date.now();
  return { sec: Math.floor(ms / 1000), nsec: (ms % 1000) * 1e6 };
}

/** The memfs file system: every node in a Map, node id = inode number. */
export class MemFs implements FileSystem {
  #nodes = new Map<number, Node>();
  #nextIno = 2;

  constructor() {
    this.#nodes.set(1, this.#make(S.IFDIR | 0o755, 0, 0));
    this.#nodes.get(1)!.attr.nlink = 2;
  }

  #make(mode: number, uid: number, gid: number, rdev = 0): Node {
    const t = now();
    const ino = this.#nodes.size === 0 ? 1 : this.#nextIno++;
    const type = mode & S.IFMT;
    return {
      attr: {
        ino,
        mode,
        nlink: 1,
        uid,
        gid,
        rdev,
        size: 0,
        blksize: 4096,
        atimeSec: t.sec,
        atimeNsec: t.nsec,
        mtimeSec: t.sec,
        mtimeNsec: t.nsec,
        ctimeSec: t.sec,
        ctimeNsec: t.nsec,
      },
      data: type === S.IFREG ? new Uint8Array(0) : undefined,
      children: type === S.IFDIR ? new Map() : undefined,
      xattrs: new Map(),
      lookups: 0,
    };
  }

  #node(nodeId: number): Node {
    return this.#nodes.get(nodeId) ?? fail(Errno.ENOENT);
  }

  #dir(nodeId: number): Node {
    const n = this.#node(nodeId);
    return n.children ? n : fail(Errno.ENOTDIR);
  }

  #touch(n: Node, what: { m?: boolean; c?: boolean; a?: boolean }): void {
    const t = now();
    if (what.m) [n.attr.mtimeSec, n.attr.mtimeNsec] = [t.sec, t.nsec];
    if (what.c || what.m) [n.attr.ctimeSec, n.attr.ctimeNsec] = [t.sec, t.nsec];
    if (what.a) [n.attr.atimeSec, n.attr.atimeNsec] = [t.sec, t.nsec];
  }

  /** Count one lookup and answer the entry. */
  #entry(nodeId: number) {
    const n = this.#node(nodeId);
    n.lookups++;
    return { nodeId, attr: { ...n.attr, blocks: Math.ceil((n.attr.size ?? 0) / 512) } };
  }

  /** Add a new node under `name`: the caller owns it, a setgid directory passes its group on. */
  #add(ctx: RequestContext, parent: number, name: string, mode: number, rdev = 0) {
    const dir = this.#dir(parent);
    checkName(name);
    if (dir.children!.has(name)) fail(Errno.EEXIST);
    const inherit = (dir.attr.mode & 0o2000) !== 0;
    const isDir = (mode & S.IFMT) === S.IFDIR;
    const node = this.#make(
      isDir && inherit ? mode | 0o2000 : mode,
      ctx.uid,
      inherit ? dir.attr.gid! : ctx.gid,
      rdev,
    );
    this.#nodes.set(node.attr.ino, node);
    dir.children!.set(name, node.attr.ino);
    if (isDir) {
      node.attr.nlink = 2;
      dir.attr.nlink = (dir.attr.nlink ?? 2) + 1;
    }
    this.#touch(dir, { m: true });
    return this.#entry(node.attr.ino);
  }

  /** Drop a link; the node goes once nothing links to it and the kernel forgot it. */
  #unlinkNode(nodeId: number): void {
    const n = this.#node(nodeId);
    n.attr.nlink = Math.max(0, (n.attr.nlink ?? 1) - (n.children ? 2 : 1));
    this.#touch(n, { c: true });
    this.#collect(nodeId);
  }

  #collect(nodeId: number): void {
    const n = this.#nodes.get(nodeId);
    if (n && n.attr.nlink === 0 && n.lookups <= 0 && nodeId !== 1) this.#nodes.delete(nodeId);
  }

  lookup(_ctx: RequestContext, parent: number, name: string) {
    checkName(name);
    return this.#entry(this.#dir(parent).children!.get(name) ?? fail(Errno.ENOENT));
  }

  forget(nodeId: number, nlookup: number): void {
    const n = this.#nodes.get(nodeId);
    if (!n) return;
    n.lookups -= nlookup;
    this.#collect(nodeId);
  }

  getattr(_ctx: RequestContext, nodeId: number): Attr {
    const n = this.#node(nodeId);
    return { ...n.attr, blocks: Math.ceil((n.attr.size ?? 0) / 512) };
  }

  setattr(ctx: RequestContext, nodeId: number, c: SetAttr): Attr {
    const n = this.#node(nodeId);
    if (c.mode !== undefined) n.attr.mode = (n.attr.mode & S.IFMT) | (c.mode & 0o7777);
    if (c.uid !== undefined) n.attr.uid = c.uid;
    if (c.gid !== undefined) n.attr.gid = c.gid;
    if (c.size !== undefined) {
      if (!n.data) fail(n.children ? Errno.EISDIR : Errno.EINVAL);
      this.#resize(n, c.size);
      this.#touch(n, { m: true });
    }
    // Ownership changes and writes by others clear setuid/setgid, as the kernel asks.
    if ((c.uid !== undefined || c.gid !== undefined || c.killSuidgid) && c.mode === undefined) {
      n.attr.mode &= (n.attr.mode & 0o010) ? ~0o6000 : ~0o4000;
    }
    const t = now();
    const time = (v: SetAttr["atime"]) => v === "now" ? t : v;
    const a = time(c.atime), m = time(c.mtime);
    if (a) [n.attr.atimeSec, n.attr.atimeNsec] = [a.sec, a.nsec];
    if (m) [n.attr.mtimeSec, n.attr.mtimeNsec] = [m.sec, m.nsec];
    [n.attr.ctimeSec, n.attr.ctimeNsec] = [t.sec, t.nsec];
    return this.getattr(ctx, nodeId);
  }

  #resize(n: Node, size: number): void {
    if (size > n.data!.length) {
      const grown = new Uint8Array(Math.max(size, n.data!.length * 2));
      grown.set(n.data!.subarray(0, n.attr.size));
      n.data = grown;
    } else n.data!.fill(0, size, n.attr.size);
    n.attr.size = size;
  }

  readlink(_ctx: RequestContext, nodeId: number): Uint8Array {
    return this.#node(nodeId).target ?? fail(Errno.EINVAL);
  }

  mknod(ctx: RequestContext, parent: number, name: string, mode: number, rdev: number) {
    return this.#add(ctx, parent, name, mode, rdev);
  }

  mkdir(ctx: RequestContext, parent: number, name: string, mode: number) {
    return this.#add(ctx, parent, name, S.IFDIR | (mode & 0o7777));
  }

  symlink(ctx: RequestContext, parent: number, name: string, target: string) {
    const e = this.#add(ctx, parent, name, S.IFLNK | 0o777);
    const n = this.#node(e.nodeId);
    n.target = new TextEncoder().encode(target);
    n.attr.size = n.target.length;
    return { ...e, attr: { ...n.attr } };
  }

  link(_ctx: RequestContext, nodeId: number, newParent: number, newName: string) {
    checkName(newName);
    const dir = this.#dir(newParent);
    const n = this.#node(nodeId);
    if (n.children) fail(Errno.EPERM);
    if (dir.children!.has(newName)) fail(Errno.EEXIST);
    dir.children!.set(newName, nodeId);
    n.attr.nlink = (n.attr.nlink ?? 1) + 1;
    this.#touch(n, { c: true });
    this.#touch(dir, { m: true });
    return this.#entry(nodeId);
  }

  unlink(_ctx: RequestContext, parent: number, name: string): void {
    const dir = this.#dir(parent);
    const id = dir.children!.get(name) ?? fail(Errno.ENOENT);
    if (this.#node(id).children) fail(Errno.EISDIR);
    dir.children!.delete(name);
    this.#touch(dir, { m: true });
    this.#unlinkNode(id);
  }

  rmdir(_ctx: RequestContext, parent: number, name: string): void {
    const dir = this.#dir(parent);
    const id = dir.children!.get(name) ?? fail(Errno.ENOENT);
    const n = this.#dir(id);
    if (n.children!.size > 0) fail(Errno.ENOTEMPTY);
    dir.children!.delete(name);
    dir.attr.nlink = (dir.attr.nlink ?? 3) - 1;
    this.#touch(dir, { m: true });
    this.#unlinkNode(id);
  }

  rename(
    _ctx: RequestContext,
    parent: number,
    name: string,
    newParent: number,
    newName: string,
    flags: number,
  ): void {
    checkName(newName);
    const from = this.#dir(parent), to = this.#dir(newParent);
    const id = from.children!.get(name) ?? fail(Errno.ENOENT);
    const other = to.children!.get(newName);
    if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)) fail(Errno.EINVAL);
    if (flags & RENAME_EXCHANGE) {
      if (other === undefined) fail(Errno.ENOENT);
      from.children!.set(name, other!);
      to.children!.set(newName, id);
      return;
    }
    if (other !== undefined) {
      if (flags & RENAME_NOREPLACE) fail(Errno.EEXIST);
      if (other === id) return;
      const o = this.#node(other);
      const moving = this.#node(id);
      if (o.children && !moving.children) fail(Errno.EISDIR);
      if (!o.children && moving.children) fail(Errno.ENOTDIR);
      if (o.children && o.children.size > 0) fail(Errno.ENOTEMPTY);
      if (o.children) to.attr.nlink = (to.attr.nlink ?? 3) - 1;
      this.#unlinkNode(other);
    }
    from.children!.delete(name);
    to.children!.set(newName, id);
    if (this.#node(id).children && from !== to) {
      from.attr.nlink = (from.attr.nlink ?? 3) - 1;
      to.attr.nlink = (to.attr.nlink ?? 2) + 1;
    }
    this.#touch(from, { m: true });
    this.#touch(to, { m: true });
    this.#touch(this.#node(id), { c: true });
  }

  open(ctx: RequestContext, nodeId: number, flags: number) {
    const n = this.#node(nodeId);
    if (n.children) fail(Errno.EISDIR);
    if ((flags & O_TRUNC) && n.data) {
      this.#resize(n, 0);
      if (ctx.killSuidgid) n.attr.mode &= (n.attr.mode & 0o010) ? ~0o6000 : ~0o4000;
      this.#touch(n, { m: true });
    }
    return { fh: nodeId };
  }

  create(ctx: RequestContext, parent: number, name: string, mode: number, flags: number) {
    const existing = this.#dir(parent).children!.get(name);
    const entry = existing === undefined
      ? this.#add(ctx, parent, name, S.IFREG | (mode & 0o7777))
      : this.#entry(existing);
    return { entry, ...this.open(ctx, entry.nodeId, flags) };
  }

  read(_ctx: RequestContext, nodeId: number, _fh: number, offset: number, size: number) {
    const n = this.#node(nodeId);
    const end = Math.min(offset + size, n.attr.size ?? 0);
    return offset >= end ? new Uint8Array(0) : n.data!.slice(offset, end);
  }

  write(
    ctx: RequestContext,
    nodeId: number,
    _fh: number,
    offset: number,
    data: Uint8Array,
  ): number {
    const n = this.#node(nodeId);
    if (offset + data.length > (n.attr.size ?? 0)) this.#resize(n, offset + data.length);
    n.data!.set(data, offset);
    if (ctx.killSuidgid) n.attr.mode &= (n.attr.mode & 0o010) ? ~0o6000 : ~0o4000;
    this.#touch(n, { m: true });
    return data.length;
  }

  fallocate(
    _ctx: RequestContext,
    nodeId: number,
    _fh: number,
    offset: number,
    length: number,
    mode: number,
  ): void {
    if (mode !== 0) fail(Errno.EOPNOTSUPP); // plain allocation only: no holes kept
    const n = this.#node(nodeId);
    if (offset + length > (n.attr.size ?? 0)) this.#resize(n, offset + length);
  }

  lseek(_ctx: RequestContext, nodeId: number, _fh: number, offset: number, whence: number) {
    const size = this.#node(nodeId).attr.size ?? 0;
    if (whence !== SEEK_DATA && whence !== SEEK_HOLE) fail(Errno.EINVAL);
    if (offset >= size) fail(Errno.ENXIO);
    // All data, no holes: data is where you are, the hole is at the end.
    return whence === SEEK_DATA ? offset : size;
  }

  readdir(
    _ctx: RequestContext,
    nodeId: number,
    _fh: number,
    offset: number,
    list: { add(name: string, ino: number, type: number, offset: number): boolean },
  ): void {
    const dir = this.#dir(nodeId);
    const entries: [string, number][] = [[".", nodeId], ["..", nodeId], ...dir.children!];
    for (let i = offset; i < entries.length; i++) {
      const [name, id] = entries[i];
      const mode = this.#nodes.get(id)?.attr.mode ?? S.IFDIR;
      if (!list.add(name, id, mode & S.IFMT, i + 1)) break;
    }
  }

  statfs() {
    const bytes = [...this.#nodes.values()].reduce((n, x) => n + (x.attr.size ?? 0), 0);
    const blocks = 1 << 20; // 4 GiB of 4 KiB blocks, as an upper bound to show
    const used = Math.ceil(bytes / 4096);
    return {
      bsize: 4096,
      frsize: 4096,
      blocks,
      bfree: blocks - used,
      bavail: blocks - used,
      files: 1 << 20,
      ffree: (1 << 20) - this.#nodes.size,
      namelen: 255,
    };
  }

  setxattr(_ctx: RequestContext, nodeId: number, name: string, value: Uint8Array, flags: number) {
    const n = this.#node(nodeId);
    // No ACLs: without them, callers (cp -a) fall back to chmod.
    if (name.startsWith("system.posix_acl_")) fail(Errno.EOPNOTSUPP);
    if ((flags & XATTR_CREATE) && n.xattrs.has(name)) fail(Errno.EEXIST);
    if ((flags & XATTR_REPLACE) && !n.xattrs.has(name)) fail(Errno.ENODATA);
    if (name.startsWith("user.") && (n.attr.mode & S.IFMT) === S.IFLNK) fail(Errno.EPERM);
    n.xattrs.set(name, value.slice());
    this.#touch(n, { c: true });
  }

  getxattr(_ctx: RequestContext, nodeId: number, name: string): Uint8Array {
    return this.#node(nodeId).xattrs.get(name) ?? fail(Errno.ENODATA);
  }

  listxattr(_ctx: RequestContext, nodeId: number): string[] {
    return [...this.#node(nodeId).xattrs.keys()];
  }

  removexattr(_ctx: RequestContext, nodeId: number, name: string): void {
    const n = this.#node(nodeId);
    if (!n.xattrs.delete(name)) fail(Errno.ENODATA);
    this.#touch(n, { c: true });
  }
}

if (import.meta.main) {
  await serveFromCommandLine(new MemFs(), "examples/memfs.ts", {
    fsname: "memfs",
    subtype: "memfs",
    defaultPermissions: true,
    handleKillpriv: true,
  });
}
