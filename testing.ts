/**
 * A test kit for file systems that needs no root, no `/dev/fuse` and no
 * mount: it builds real FUSE requests, runs them through the same
 * dispatcher and encoders the transports use, and decodes the replies, so
 * a test asserts on what the kernel would have received.
 *
 * ```ts
 * import { TestSession } from "@denofuse/denofuse/testing";
 * import { hello } from "./examples/hello.ts";
 *
 * const t = await TestSession.start(hello);
 * const file = await t.lookup(1, "hello");
 * const { fh } = await t.open(file.nodeId);
 * console.log(new TextDecoder().decode(await t.read(file.nodeId, fh, 0, 100)));
 * ```
 *
 * Each call answers with the decoded reply, or rejects with a
 * {@linkcode FuseError} carrying the errno the file system answered;
 * {@linkcode TestSession.request} gives the raw reply of any opcode.
 *
 * @module
 */

import {
  Attr as AttrLayout,
  AttrOut,
  CreateIn,
  Dirent,
  DirentPlus,
  EntryOut,
  GetattrIn,
  GetxattrIn,
  InHeader,
  InitFlag,
  InitIn,
  MkdirIn,
  Opcode,
  OpenIn,
  OpenOut,
  ReadIn,
  ReleaseIn,
  RenameIn,
  StatfsOut,
  WriteIn,
  WriteOut,
} from "./ops/abi.ts";
import type { BackingIo } from "./ops/backing_io.ts";
import { getU64, setU64 } from "./ops/codec.ts";
import { Dispatcher, type DispatcherOptions } from "./ops/dispatch.ts";
import { FuseError } from "./ops/error.ts";
import type { Exchange } from "./ops/exchange.ts";
import type { Attr, FileSystem, StatFs } from "./ops/filesystem.ts";
import { DirectIo } from "./server/io/direct_io.ts";

export { Opcode } from "./ops/abi.ts";

/** A reply as the kernel would receive it. */
export interface TestReply {
  /** The request's unique id. */
  unique: number;
  /** 0, or a negative errno. */
  error: number;
  /** The reply's payload (after `fuse_out_header`). */
  payload: Uint8Array;
  /** A view of {@linkcode payload}. */
  view: DataView;
}

/** A directory entry from READDIRPLUS: the name, and what a lookup of it would answer. */
export interface TestDirentPlus extends TestDirent {
  /** The node id the entry counts a lookup of (0 for "." and ".."). */
  nodeId: number;
  /** Its attributes. */
  attr: Attr;
}

/** A directory entry from READDIR. */
export interface TestDirent {
  /** The entry's name. */
  name: string;
  /** Its inode number, as the file system listed it. */
  ino: number;
  /** The file type (`S.IFREG`, `S.IFDIR`, ...). */
  type: number;
  /** The offset of the entry after it. */
  off: number;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * One request in memory of its own, with its replies recorded: the
 * dispatcher's view of a transport (an `Exchange`). Data a reply reads from
 * an fd, and write data to an fd, really move (`pread`, `pwrite`);
 * override {@linkcode MemoryExchange.replyFromFd} and
 * {@linkcode MemoryExchange.writeDataToFd} to fake them.
 */
export class MemoryExchange implements Exchange {
  /** Backing calls: direct system calls. */
  readonly io: BackingIo = new DirectIo();
  /** The request: header first. */
  header: DataView;
  /** The header's offset: 0. */
  headerOffset = 0;
  /** The request, again: the argument follows the header. */
  arg: DataView;
  /** The argument's offset. */
  argOffset: number = InHeader.SIZE;
  /** Bytes of argument present. */
  argLength: number;
  /** The request's bytes: names and data follow the argument. */
  data: Uint8Array;
  /** Where names and data start. */
  dataOffset: number;
  /** Bytes of names and data. */
  dataLength: number;
  /** The reply payload's memory. */
  readonly out: DataView;
  /** The same memory, as bytes. */
  readonly outBytes: Uint8Array;
  /** The reply payload's offset: 0. */
  readonly outOffset = 0;
  /** Room for the reply payload. */
  readonly outCapacity: number;
  /** Replies sent, in order (one, for a well-behaved dispatcher). */
  replies: TestReply[] = [];
  /** Released without a reply (FORGET, INTERRUPT). */
  released = false;
  /** Called at every reply and release (a session's counts). */
  onSettle?: (replied: boolean) => void;
  #settle!: () => void;
  /** Settles at the first reply or the release. */
  readonly done: Promise<void> = new Promise<void>((r) => this.#settle = r);

  /**
   * `request`: header, argument and data, as the kernel sends them;
   * `argSize`: the opcode's argument size (`Dispatcher.argSize`).
   */
  constructor(request: Uint8Array, argSize: number, outCapacity?: number) {
    outCapacity ??= 1 << 20;
    const buf = new Uint8Array(request);
    this.header = this.arg = new DataView(buf.buffer);
    this.data = buf;
    this.argLength = Math.min(argSize, request.length - InHeader.SIZE);
    this.dataOffset = InHeader.SIZE + this.argLength;
    this.dataLength = request.length - this.dataOffset;
    this.outBytes = new Uint8Array(outCapacity);
    this.out = new DataView(this.outBytes.buffer);
    this.outCapacity = outCapacity;
  }

  /** Record a reply of `length` payload bytes. */
  reply(unique: number, error: number, length: number): void {
    const payload = this.outBytes.slice(0, length);
    this.replies.push({ unique, error, payload, view: new DataView(payload.buffer) });
    this.onSettle?.(true);
    this.#settle();
  }

  /** Reply with `length` bytes read from `fd` at `offset`. */
  replyFromFd(unique: number, fd: number, offset: number, length: number): void | Promise<void> {
    return this.io.pread(fd, this.outBytes.subarray(0, length), offset).then(
      (n) => this.reply(unique, 0, n),
      (e) => this.reply(unique, -(e.errno ?? 5), 0),
    );
  }

  /** Write the request's data to `fd` at `offset`. */
  writeDataToFd(fd: number, offset: number, _killSuidgid: boolean): number | Promise<number> {
    return this.io.pwrite(
      fd,
      this.data.subarray(this.dataOffset, this.dataOffset + this.dataLength),
      offset,
    );
  }

  /** The request needs no reply. */
  noReply(): void {
    this.released = true;
    this.onSettle?.(false);
    this.#settle();
  }
}

/** A file system behind a dispatcher, driven by requests built here. */
export class TestSession {
  #dispatcher: Dispatcher;
  /** Caller identity put in every request's header (default root). */
  caller = { uid: 0, gid: 0, pid: 1 };
  #unique = 0;
  #counts = { requests: 0, replies: 0, released: 0 };

  private constructor(dispatcher: Dispatcher) {
    this.#dispatcher = dispatcher;
  }

  /** Serve `fs` and answer the kernel's INIT (protocol 7.45), as a mount would. */
  static async start(fs: FileSystem, options?: DispatcherOptions): Promise<TestSession> {
    const t = new TestSession(new Dispatcher(fs, options));
    const init = new Uint8Array(InitIn.SIZE);
    const v = new DataView(init.buffer);
    const flags = InitFlag.ASYNC_READ | InitFlag.BIG_WRITES | InitFlag.MAX_PAGES |
      InitFlag.INIT_EXT | InitFlag.DO_READDIRPLUS;
    v.setUint32(InitIn.major, 7, true);
    v.setUint32(InitIn.minor, 45, true);
    v.setUint32(InitIn.max_readahead, 131072, true);
    v.setUint32(InitIn.flags, Number(flags & 0xffffffffn), true);
    v.setUint32(InitIn.flags2, Number(flags >> 32n), true);
    await t.#ok(Opcode.INIT, 0, init);
    await t.#dispatcher.initialized;
    return t;
  }

  /**
   * Send one request of any opcode ({@linkcode Opcode}): `arg` is the
   * opcode's fixed argument, `data` what follows it (strings get their
   * NUL). Resolves with the reply, or null for requests that get none
   * (FORGET); rejects with a {@linkcode FuseError} of the errno the file
   * system answered, as the other helpers do.
   */
  async request(
    opcode: number,
    nodeId: number,
    arg?: Uint8Array,
    ...data: (string | Uint8Array)[]
  ): Promise<TestReply | null> {
    const r = await this.exchange(opcode, nodeId, arg, ...data);
    if (r && r.error !== 0) throw new FuseError(-r.error);
    return r;
  }

  /**
   * Like {@linkcode request}, but an error reply resolves too: its `error`
   * is the negative errno, as the kernel would see it.
   */
  exchange(
    opcode: number,
    nodeId: number,
    arg?: Uint8Array,
    ...data: (string | Uint8Array)[]
  ): Promise<TestReply | null> {
    arg ??= new Uint8Array(0);
    const parts = data.map((d) => typeof d === "string" ? encoder.encode(d + "\0") : d);
    const len = InHeader.SIZE + arg.length + parts.reduce((n, p) => n + p.length, 0);
    const bytes = new Uint8Array(len);
    const v = new DataView(bytes.buffer);
    this.#unique += 2;
    v.setUint32(InHeader.len, len, true);
    v.setUint32(InHeader.opcode, opcode, true);
    setU64(v, InHeader.unique, this.#unique);
    setU64(v, InHeader.nodeid, nodeId);
    v.setUint32(InHeader.uid, this.caller.uid, true);
    v.setUint32(InHeader.gid, this.caller.gid, true);
    v.setUint32(InHeader.pid, this.caller.pid, true);
    bytes.set(arg, InHeader.SIZE);
    let at = InHeader.SIZE + arg.length;
    for (const p of parts) {
      bytes.set(p, at);
      at += p.length;
    }
    const argSize = opcode === Opcode.INIT ? arg.length : this.#dispatcher.argSize(opcode);
    const ex = new MemoryExchange(bytes, argSize);
    ex.onSettle = (replied) => replied ? this.#counts.replies++ : this.#counts.released++;
    this.#counts.requests++;
    this.#dispatcher.dispatch(ex);
    return ex.done.then(() => ex.replies[0] ?? null);
  }

  /**
   * Requests sent, replies received and requests released without one
   * (FORGET), so far: a dispatcher answers each request exactly once, so
   * `requests` is `replies + released` once every request has settled.
   */
  get counts(): { readonly requests: number; readonly replies: number; readonly released: number } {
    return { ...this.#counts };
  }

  /** LOOKUP `name` in `parent`. */
  async lookup(parent: number, name: string): Promise<{ nodeId: number; attr: Attr }> {
    return decodeEntry(await this.#ok(Opcode.LOOKUP, parent, new Uint8Array(0), name));
  }

  /** GETATTR. */
  async getattr(nodeId: number): Promise<Attr> {
    const r = await this.#ok(Opcode.GETATTR, nodeId, new Uint8Array(GetattrIn.SIZE));
    return decodeAttr(r.view, AttrOut.attr);
  }

  /** MKDIR `name` in `parent`, with `mode` (default 0o755). */
  async mkdir(
    parent: number,
    name: string,
    mode?: number,
  ): Promise<{ nodeId: number; attr: Attr }> {
    const a = new Uint8Array(MkdirIn.SIZE);
    new DataView(a.buffer).setUint32(MkdirIn.mode, mode ?? 0o755, true);
    return decodeEntry(await this.#ok(Opcode.MKDIR, parent, a, name));
  }

  /** CREATE `name` in `parent` with `mode` (default 0o644), opened with `flags` (default O_RDWR). */
  async create(
    parent: number,
    name: string,
    mode?: number,
    flags?: number,
  ): Promise<{ nodeId: number; attr: Attr; fh: number }> {
    const a = new Uint8Array(CreateIn.SIZE);
    const v = new DataView(a.buffer);
    v.setUint32(CreateIn.flags, flags ?? 2, /* O_RDWR */ true);
    v.setUint32(CreateIn.mode, mode ?? 0o644, true);
    const r = await this.#ok(Opcode.CREATE, parent, a, name);
    return { ...decodeEntry(r), fh: getU64(r.view, EntryOut.SIZE + OpenOut.fh) };
  }

  /** OPEN with `flags` (default read-only). */
  async open(nodeId: number, flags?: number): Promise<{ fh: number }> {
    const a = new Uint8Array(OpenIn.SIZE);
    new DataView(a.buffer).setUint32(OpenIn.flags, flags ?? 0, true);
    const r = await this.#ok(Opcode.OPEN, nodeId, a);
    return { fh: getU64(r.view, OpenOut.fh) };
  }

  /** READ up to `size` bytes at `offset`. */
  async read(nodeId: number, fh: number, offset: number, size: number): Promise<Uint8Array> {
    const a = new Uint8Array(ReadIn.SIZE);
    const v = new DataView(a.buffer);
    setU64(v, ReadIn.fh, fh);
    setU64(v, ReadIn.offset, offset);
    v.setUint32(ReadIn.size, size, true);
    return (await this.#ok(Opcode.READ, nodeId, a)).payload;
  }

  /** WRITE `data` at `offset`; the count written. */
  async write(nodeId: number, fh: number, offset: number, data: Uint8Array): Promise<number> {
    const a = new Uint8Array(WriteIn.SIZE);
    const v = new DataView(a.buffer);
    setU64(v, WriteIn.fh, fh);
    setU64(v, WriteIn.offset, offset);
    v.setUint32(WriteIn.size, data.length, true);
    const r = await this.#ok(Opcode.WRITE, nodeId, a, data);
    return r.view.getUint32(WriteOut.size, true);
  }

  /** RELEASE an open file. */
  async release(nodeId: number, fh: number): Promise<void> {
    const a = new Uint8Array(ReleaseIn.SIZE);
    setU64(new DataView(a.buffer), ReleaseIn.fh, fh);
    await this.#ok(Opcode.RELEASE, nodeId, a);
  }

  /** OPENDIR, READDIR from `offset` (default 0) until the end, RELEASEDIR: every entry from there. */
  async readdir(nodeId: number, offset?: number): Promise<TestDirent[]> {
    return (await this.#list(Opcode.READDIR, nodeId, offset ?? 0)).map(({ dirent }) => dirent);
  }

  /**
   * OPENDIR, READDIRPLUS from `offset` until the end, RELEASEDIR: every
   * entry with what the file system said of it (node id 0 for "." and "..",
   * which count no lookup).
   */
  async readdirplus(nodeId: number, offset?: number): Promise<TestDirentPlus[]> {
    return (await this.#list(Opcode.READDIRPLUS, nodeId, offset ?? 0)).map(({ dirent, entry }) => ({
      ...dirent,
      ...entry!,
    }));
  }

  async #list(
    opcode: number,
    nodeId: number,
    from: number,
  ): Promise<{ dirent: TestDirent; entry?: { nodeId: number; attr: Attr } }[]> {
    const opened = await this.#ok(Opcode.OPENDIR, nodeId, new Uint8Array(OpenIn.SIZE));
    const fh = getU64(opened.view, OpenOut.fh);
    const entries = [];
    for (let offset = from;;) {
      const a = new Uint8Array(ReadIn.SIZE);
      const v = new DataView(a.buffer);
      setU64(v, ReadIn.fh, fh);
      setU64(v, ReadIn.offset, offset);
      v.setUint32(ReadIn.size, 4096, true);
      const page = decodeDirents(await this.#ok(opcode, nodeId, a), opcode === Opcode.READDIRPLUS);
      if (page.length === 0) break;
      entries.push(...page);
      offset = page[page.length - 1].dirent.off;
    }
    const r = new Uint8Array(ReleaseIn.SIZE);
    setU64(new DataView(r.buffer), ReleaseIn.fh, fh);
    await this.#ok(Opcode.RELEASEDIR, nodeId, r);
    return entries;
  }

  /** READLINK: the target, as text. */
  async readlink(nodeId: number): Promise<string> {
    return decoder.decode((await this.#ok(Opcode.READLINK, nodeId, new Uint8Array(0))).payload);
  }

  /** STATFS of the file system (as seen from `nodeId`, default the root). */
  async statfs(nodeId?: number): Promise<Required<StatFs>> {
    const r = await this.#ok(Opcode.STATFS, nodeId ?? 1, new Uint8Array(0));
    const o = StatfsOut;
    return {
      blocks: getU64(r.view, o.blocks),
      bfree: getU64(r.view, o.bfree),
      bavail: getU64(r.view, o.bavail),
      files: getU64(r.view, o.files),
      ffree: getU64(r.view, o.ffree),
      bsize: r.view.getUint32(o.bsize, true),
      namelen: r.view.getUint32(o.namelen, true),
      frsize: r.view.getUint32(o.frsize, true),
    };
  }

  /** GETXATTR `name`: its value (ERANGE if longer than `size`, default 64 KiB). */
  async getxattr(nodeId: number, name: string, size?: number): Promise<Uint8Array> {
    const a = new Uint8Array(GetxattrIn.SIZE);
    new DataView(a.buffer).setUint32(GetxattrIn.size, size ?? 65536, true);
    return (await this.#ok(Opcode.GETXATTR, nodeId, a, name)).payload;
  }

  /** LISTXATTR: the names (ERANGE if longer than `size`, default 64 KiB). */
  async listxattr(nodeId: number, size?: number): Promise<string[]> {
    const a = new Uint8Array(GetxattrIn.SIZE);
    new DataView(a.buffer).setUint32(GetxattrIn.size, size ?? 65536, true);
    const text = decoder.decode((await this.#ok(Opcode.LISTXATTR, nodeId, a)).payload);
    return text === "" ? [] : text.replace(/\0$/, "").split("\0");
  }

  /** UNLINK `name` in `parent`. */
  async unlink(parent: number, name: string): Promise<void> {
    await this.#ok(Opcode.UNLINK, parent, new Uint8Array(0), name);
  }

  /** RENAME `name` in `parent` to `newName` in `newParent`. */
  async rename(parent: number, name: string, newParent: number, newName: string): Promise<void> {
    const a = new Uint8Array(RenameIn.SIZE);
    setU64(new DataView(a.buffer), RenameIn.newdir, newParent);
    await this.#ok(Opcode.RENAME, parent, a, name, newName);
  }

  /** A request that must succeed: its reply, or a FuseError of the errno it got. */
  async #ok(
    opcode: number,
    nodeId: number,
    arg: Uint8Array,
    ...data: (string | Uint8Array)[]
  ): Promise<TestReply> {
    const r = await this.request(opcode, nodeId, arg, ...data);
    if (!r) throw new Error(`opcode ${opcode} got no reply`);
    return r;
  }
}

/** Decode a `fuse_entry_out`. */
function decodeEntry(r: TestReply): { nodeId: number; attr: Attr } {
  return { nodeId: getU64(r.view, EntryOut.nodeid), attr: decodeAttr(r.view, EntryOut.attr) };
}

/** Decode a `fuse_attr` at `o`. */
function decodeAttr(v: DataView, o: number): Attr {
  const a = AttrLayout;
  return {
    ino: getU64(v, o + a.ino),
    size: getU64(v, o + a.size),
    blocks: getU64(v, o + a.blocks),
    mode: v.getUint32(o + a.mode, true),
    nlink: v.getUint32(o + a.nlink, true),
    uid: v.getUint32(o + a.uid, true),
    gid: v.getUint32(o + a.gid, true),
    rdev: v.getUint32(o + a.rdev, true),
    blksize: v.getUint32(o + a.blksize, true),
    atimeSec: getU64(v, o + a.atime),
    mtimeSec: getU64(v, o + a.mtime),
    ctimeSec: getU64(v, o + a.ctime),
    atimeNsec: v.getUint32(o + a.atimensec, true),
    mtimeNsec: v.getUint32(o + a.mtimensec, true),
    ctimeNsec: v.getUint32(o + a.ctimensec, true),
  };
}

/** Decode a READDIR reply's `fuse_dirent`s (READDIRPLUS: `fuse_direntplus`es). */
function decodeDirents(
  r: TestReply,
  plus: boolean,
): { dirent: TestDirent; entry?: { nodeId: number; attr: Attr } }[] {
  const out = [];
  const head = plus ? DirentPlus.dirent : 0;
  for (let at = 0; at + head + Dirent.SIZE <= r.payload.length;) {
    const d = at + head;
    const namelen = r.view.getUint32(d + Dirent.namelen, true);
    const dirent = {
      ino: getU64(r.view, d + Dirent.ino),
      off: getU64(r.view, d + Dirent.off),
      type: r.view.getUint32(d + Dirent.type, true) << 12,
      name: decoder.decode(r.payload.subarray(d + Dirent.SIZE, d + Dirent.SIZE + namelen)),
    };
    const entry = plus
      ? {
        nodeId: getU64(r.view, at + EntryOut.nodeid),
        attr: decodeAttr(r.view, at + EntryOut.attr),
      }
      : undefined;
    out.push({ dirent, entry });
    at += head + ((Dirent.SIZE + namelen + 7) & ~7);
  }
  return out;
}
