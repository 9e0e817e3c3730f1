/**
 * A tar archive, mounted read-only: each member's data is served straight
 * from the archive's fd (`backingFd` with `backingOffset` and
 * `backingLength`), so the session reads it into the reply buffer itself
 * (READ_FIXED on io_uring, `pread` on /dev/fuse) and `read` is never
 * called. The archive is read with the file helpers (`openFile`,
 * `preadFile`), so `--allow-ffi` is all it needs.
 *
 *     deno run --allow-ffi examples/tarfs.ts ARCHIVE.tar MOUNTPOINT [-d] [-o opts]
 *
 * Understands ustar and GNU tar (long names, `L` and `K`) and the `path`
 * and `linkpath` of pax headers: regular files, directories, symlinks and
 * hard links. Ctrl-C unmounts.
 *
 * @module
 */

import {
  type Attr,
  closeFile,
  type DirectoryList,
  Errno,
  type FileSystem,
  fstatFile,
  FuseError,
  mount,
  openFile,
  preadFile,
  type RequestContext,
  runMain,
  S,
  type ServerOption,
  UsageError,
} from "../mod.ts";

/** A member of the archive, as a node of the tree. */
interface Node {
  attr: Attr;
  /** Where a regular file's data starts in the archive. */
  offset: number;
  /** A directory's names. */
  children?: Map<string, number>;
  /** A symlink's target. */
  target?: string;
}

const ROOT = 1;
const BLOCK = 512;
const decoder = new TextDecoder();
const fail = (errno: number): never => {
  throw new FuseError(errno);
};

/** A NUL-terminated text field of a header. */
function text(b: Uint8Array, at: number, length: number): string {
  const field = b.subarray(at, at + length);
  const end = field.indexOf(0);
  return decoder.decode(end < 0 ? field : field.subarray(0, end));
}

/** An octal number field (GNU's base-256 form for large values too). */
function octal(b: Uint8Array, at: number, length: number): number {
  if (b[at] & 0x80) {
    let n = b[at] & 0x7f;
    for (let i = 1; i < length; i++) n = n * 256 + b[at + i];
    return n;
  }
  return parseInt(text(b, at, length).trim() || "0", 8);
}

/** The records of a pax extended header: `LEN key=value\n`. */
function pax(data: Uint8Array): Map<string, string> {
  const records = new Map<string, string>();
  for (let at = 0; at < data.length;) {
    const space = data.indexOf(0x20, at);
    const length = parseInt(decoder.decode(data.subarray(at, space)), 10);
    if (!(length > 0)) break;
    const record = decoder.decode(data.subarray(space + 1, at + length - 1));
    const eq = record.indexOf("=");
    records.set(record.slice(0, eq), record.slice(eq + 1));
    at += length;
  }
  return records;
}

/** The tar file system over the archive open at `fd`. */
export class TarFs implements FileSystem {
  #fd: number;
  #nodes = new Map<number, Node>();
  #nextFh = 1;

  #owner: { uid?: number; gid?: number };

  /**
   * Read the archive's table of contents (the data stays in the archive).
   * `owner` replaces the owners the archive records (`-o uid=N,gid=N`).
   */
  constructor(archive: string, owner: { uid?: number; gid?: number } = {}) {
    this.#owner = owner;
    this.#fd = openFile(archive);
    const { mtimeSec, uid, gid } = fstatFile(this.#fd);
    const [u, g] = [owner.uid ?? uid ?? 0, owner.gid ?? gid ?? 0];
    this.#nodes.set(ROOT, this.#directory(ROOT, 0o755, u, g, mtimeSec ?? 0));
    this.#index();
  }

  #directory(ino: number, perm: number, uid: number, gid: number, mtime: number): Node {
    const attr = {
      ino,
      mode: S.IFDIR | perm,
      nlink: 2,
      uid,
      gid,
      mtimeSec: mtime,
      ctimeSec: mtime,
    };
    return { attr, offset: 0, children: new Map() };
  }

  /** Walk the headers, each followed by its data rounded up to 512 bytes. */
  #index(): void {
    let longName: string | undefined, longLink: string | undefined;
    for (let at = 0;;) {
      const h = preadFile(this.#fd, BLOCK, at);
      if (h.length < BLOCK || h.every((b) => b === 0)) break;
      const size = octal(h, 124, 12);
      const type = String.fromCharCode(h[156] || 0x30);
      const data = at + BLOCK;
      at = data + Math.ceil(size / BLOCK) * BLOCK;
      if (type === "L" || type === "K" || type === "x") {
        const body = preadFile(this.#fd, size, data);
        if (type === "x") {
          const records = pax(body);
          longName = records.get("path") ?? longName;
          longLink = records.get("linkpath") ?? longLink;
        } else if (type === "L") longName = text(body, 0, size);
        else longLink = text(body, 0, size);
        continue;
      }
      const prefix = text(h, 257, 6) === "ustar" ? text(h, 345, 155) : "";
      const name = longName ?? (prefix ? `${prefix}/${text(h, 0, 100)}` : text(h, 0, 100));
      const link = longLink ?? text(h, 157, 100);
      longName = longLink = undefined;
      const path = name.split("/").filter((c) => c !== "" && c !== ".");
      if (path.length === 0) continue;
      const perm = octal(h, 100, 8) & 0o7777;
      const uid = this.#owner.uid ?? octal(h, 108, 8);
      const gid = this.#owner.gid ?? octal(h, 116, 8);
      const mtime = octal(h, 136, 12);
      const parent = this.#makeParents(path.slice(0, -1), mtime);
      const last = path[path.length - 1];
      if (type === "1") {
        // A hard link: another name for a member already seen.
        const target = this.#find(link.split("/").filter((c) => c !== "" && c !== "."));
        if (target === undefined) continue;
        this.#nodes.get(target)!.attr.nlink! += 1;
        this.#nodes.get(parent)!.children!.set(last, target);
        continue;
      }
      const existing = this.#nodes.get(parent)!.children!.get(last);
      const ino = existing ?? this.#nodes.size + 1;
      let node: Node;
      if (type === "5") {
        node = this.#directory(ino, perm, uid, gid, mtime);
        if (existing) node.children = this.#nodes.get(existing)!.children;
      } else {
        const symlink = type === "2";
        node = {
          attr: {
            ino,
            mode: (symlink ? S.IFLNK : S.IFREG) | perm,
            nlink: 1,
            uid,
            gid,
            size: symlink ? new TextEncoder().encode(link).length : size,
            blocks: Math.ceil(size / 512),
            mtimeSec: mtime,
            ctimeSec: mtime,
          },
          offset: data,
          target: symlink ? link : undefined,
        };
      }
      this.#nodes.set(ino, node);
      this.#nodes.get(parent)!.children!.set(last, ino);
    }
  }

  /** The directory at `path` from the root, made (as tar does) when absent. */
  #makeParents(path: string[], mtime: number): number {
    let dir = ROOT;
    for (const name of path) {
      const children = this.#nodes.get(dir)!.children!;
      let next = children.get(name);
      if (next === undefined) {
        next = this.#nodes.size + 1;
        const { uid = 0, gid = 0 } = this.#owner;
        this.#nodes.set(next, this.#directory(next, 0o755, uid, gid, mtime));
        children.set(name, next);
      }
      dir = next;
    }
    return dir;
  }

  #find(path: string[]): number | undefined {
    let node: number | undefined = ROOT;
    for (const name of path) node = this.#nodes.get(node!)?.children?.get(name);
    return node;
  }

  #node(nodeId: number): Node {
    return this.#nodes.get(nodeId) ?? fail(Errno.ENOENT);
  }

  lookup(_ctx: RequestContext, parent: number, name: string) {
    const nodeId = this.#node(parent).children?.get(name) ?? fail(Errno.ENOENT);
    return { nodeId, attr: this.#node(nodeId).attr };
  }

  getattr(_ctx: RequestContext, nodeId: number): Attr {
    return this.#node(nodeId).attr;
  }

  readlink(_ctx: RequestContext, nodeId: number): string {
    return this.#node(nodeId).target ?? fail(Errno.EINVAL);
  }

  open(_ctx: RequestContext, nodeId: number, flags: number) {
    const node = this.#node(nodeId);
    if (node.children) fail(Errno.EISDIR);
    if ((flags & 3) !== 0 || flags & 0o1000) fail(Errno.EROFS); // O_WRONLY, O_RDWR, O_TRUNC
    // The member is a window of the archive: the session serves its reads.
    return {
      fh: this.#nextFh++,
      backingFd: this.#fd,
      backingOffset: node.offset,
      backingLength: node.attr.size,
      keepCache: true,
    };
  }

  /** Only for a handle the session could not take as a window (it takes all of these). */
  read(_ctx: RequestContext, nodeId: number, _fh: number, offset: number, size: number) {
    const node = this.#node(nodeId);
    const length = Math.max(0, Math.min(size, (node.attr.size ?? 0) - offset));
    return { fd: this.#fd, offset: node.offset + offset, length };
  }

  readdir(_ctx: RequestContext, nodeId: number, _fh: number, offset: number, list: DirectoryList) {
    const dir = this.#node(nodeId).children ?? fail(Errno.ENOTDIR);
    const names: [string, number][] = [[".", nodeId], ["..", nodeId], ...dir];
    for (let i = offset; i < names.length; i++) {
      const [name, ino] = names[i];
      if (!list.add(name, ino, this.#node(ino).attr.mode & S.IFMT, i + 1)) break;
    }
  }

  destroy(): void {
    closeFile(this.#fd);
  }

  statfs() {
    return { blocks: 0, bfree: 0, files: this.#nodes.size, bsize: BLOCK, namelen: 255 };
  }
}

/** The options of tarfs's own, beside the mount options. */
const OPTIONS: ServerOption[] = [
  { name: "uid", value: "N", help: "show every member as owned by user N" },
  { name: "gid", value: "N", help: "show every member as owned by group N" },
];

/** A whole number from `-o name=N`. */
function id(name: string, value: string | true | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`-o ${name} takes a number`);
  return n;
}

if (import.meta.main) {
  await runMain("examples/tarfs.ts", "ARCHIVE MOUNTPOINT", (cli) => {
    if (cli.positionals.length !== 2) throw new UsageError("expected ARCHIVE and MOUNTPOINT");
    const [archive, mountpoint] = cli.positionals;
    const owner = { uid: id("uid", cli.extra.uid), gid: id("gid", cli.extra.gid) };
    return mount(new TarFs(archive, owner), mountpoint, {
      fsname: archive,
      subtype: "tarfs",
      readOnly: true,
      defaultPermissions: true,
      ...cli.options,
    });
  }, OPTIONS);
}
