/**
 * The dispatcher: decodes a request from an {@linkcode Exchange}, calls the
 * FileSystem method for its opcode, encodes the answer and replies.
 *
 * It answers ENOSYS for an unknown opcode or a missing method (or the
 * kernel's documented default, see `filesystem.ts`), EINVAL for a request
 * too short for its opcode, never replies to FORGET and BATCH_FORGET, and
 * turns anything a method throws into an errno so that no request is left
 * unanswered.
 *
 * @module
 */

import { Errno, errnoName, SystemError } from "../ffi/errno.ts";
import {
  AccessIn,
  BatchForgetIn,
  CopyFileRangeIn,
  CopyFileRangeOut,
  CreateIn,
  FallocateIn,
  FATTR,
  FileLock as FileLockLayout,
  FlushIn,
  ForgetIn,
  ForgetOne,
  FsyncIn,
  FUSE_FSYNC_FDATASYNC,
  FUSE_GETATTR_FH,
  FUSE_LK_FLOCK,
  FUSE_OPEN_KILL_SUIDGID,
  FUSE_WRITE_KILL_SUIDGID,
  GetattrIn,
  GetxattrIn,
  GetxattrOut,
  InHeader,
  InitFlag,
  initFlagNames,
  InterruptIn,
  LinkIn,
  LkIn,
  LkOut,
  LseekIn,
  LseekOut,
  MkdirIn,
  MknodIn,
  NotifyRetrieveIn,
  Opcode,
  opcodeName,
  OpenIn,
  OutHeader,
  ReadIn,
  ReleaseIn,
  Rename2In,
  RenameIn,
  SetattrIn,
  SetxattrIn,
  StatxIn,
  WriteIn,
  WriteOut,
} from "./abi.ts";
import {
  encodeAttrOut,
  encodeEntry,
  encodeOpen,
  encodeStatfs,
  encodeStatxOut,
  getU64,
  setU64,
} from "./codec.ts";
import { BackingFdTable } from "./backing_fds.ts";
import { DirectoryList, DirectoryPlusList } from "./directory.ts";
import { FuseError } from "./error.ts";
import type { Exchange } from "./exchange.ts";
import type {
  Attr,
  ConnectionInfo,
  Entry,
  FileLock,
  FileSystem,
  MaybePromise,
  OpenReply,
  ReadReply,
  RequestContext,
  SetAttr,
  WriteReply,
} from "./filesystem.ts";
import { LOCK_TO_EOF } from "./filesystem.ts";
import { decodeInitIn, type InitOptions, negotiate } from "./init.ts";
import { INTERRUPT_POLL_MS, InterruptBoard } from "./interrupts.ts";

/** Options of the dispatcher: INIT wishes, cache timeouts and logging. */
export interface DispatcherOptions extends InitOptions {
  /** Seconds the kernel caches names (default 1). */
  entryTimeout?: number;
  /** Seconds the kernel caches attributes (default 1). */
  attrTimeout?: number;
  /** Receives one line per request and per reply when set (`-d`). */
  debug?: (line: string) => void;
  /** Receives unexpected errors thrown by FileSystem methods (default: console.error). */
  onError?: (error: unknown, opcode: string) => void;
  /** The handle → fd table to use (shared with other threads' dispatchers); default: a new one. */
  backingFds?: BackingFdTable;
  /** Where interrupts are posted (shared with other threads' dispatchers); default: a new one. */
  interrupts?: InterruptBoard;
}

/** The state agreed at INIT. */
export interface Connection {
  /** Negotiated minor version. */
  readonly minor: number;
  /** Flags both sides enabled. */
  readonly flags: bigint;
  /** Largest write the kernel sends. */
  readonly maxWrite: number;
  /** Largest read the kernel asks for. */
  readonly maxRead: number;
}

/**
 * Size of the fixed argument struct of each opcode, as the kernel sends it
 * at protocol 7.31 and later. Opcodes without an entry carry no fixed part.
 */
const ARG_SIZE: Record<number, number> = {
  [Opcode.FORGET]: ForgetIn.SIZE,
  [Opcode.GETATTR]: GetattrIn.SIZE,
  [Opcode.SETATTR]: SetattrIn.SIZE,
  [Opcode.MKNOD]: MknodIn.SIZE,
  [Opcode.MKDIR]: MkdirIn.SIZE,
  [Opcode.RENAME]: RenameIn.SIZE,
  [Opcode.LINK]: LinkIn.SIZE,
  [Opcode.OPEN]: OpenIn.SIZE,
  [Opcode.READ]: ReadIn.SIZE,
  [Opcode.WRITE]: WriteIn.SIZE,
  [Opcode.RELEASE]: ReleaseIn.SIZE,
  [Opcode.FSYNC]: FsyncIn.SIZE,
  [Opcode.SETXATTR]: SetxattrIn.COMPAT_SIZE,
  [Opcode.GETXATTR]: GetxattrIn.SIZE,
  [Opcode.LISTXATTR]: GetxattrIn.SIZE,
  [Opcode.FLUSH]: FlushIn.SIZE,
  [Opcode.INIT]: 16,
  [Opcode.OPENDIR]: OpenIn.SIZE,
  [Opcode.READDIR]: ReadIn.SIZE,
  [Opcode.RELEASEDIR]: ReleaseIn.SIZE,
  [Opcode.FSYNCDIR]: FsyncIn.SIZE,
  [Opcode.GETLK]: 48,
  [Opcode.SETLK]: 48,
  [Opcode.SETLKW]: 48,
  [Opcode.ACCESS]: AccessIn.SIZE,
  [Opcode.CREATE]: CreateIn.SIZE,
  [Opcode.INTERRUPT]: 8,
  [Opcode.BMAP]: 16,
  [Opcode.IOCTL]: 32,
  [Opcode.POLL]: 24,
  [Opcode.BATCH_FORGET]: BatchForgetIn.SIZE,
  [Opcode.FALLOCATE]: FallocateIn.SIZE,
  [Opcode.READDIRPLUS]: ReadIn.SIZE,
  [Opcode.RENAME2]: Rename2In.SIZE,
  [Opcode.LSEEK]: LseekIn.SIZE,
  [Opcode.COPY_FILE_RANGE]: CopyFileRangeIn.SIZE,
  [Opcode.COPY_FILE_RANGE_64]: CopyFileRangeIn.SIZE,
  [Opcode.SYNCFS]: 8,
  [Opcode.TMPFILE]: CreateIn.SIZE,
  [Opcode.STATX]: 24,
  [Opcode.NOTIFY_REPLY]: NotifyRetrieveIn.SIZE,
};

const decoder = new TextDecoder("utf-8", { fatal: true });
const encoder = new TextEncoder();

/** What a FileSystem's `init` is told of a connection. */
function connectionInfo(conn: Connection): ConnectionInfo {
  return {
    minor: conn.minor,
    maxWrite: conn.maxWrite,
    maxRead: conn.maxRead,
    flags: initFlagNames(conn.flags),
  };
}

/** Thrown inside the dispatcher to answer a request with an errno. */
function fail(errno: number): never {
  throw new FuseError(errno);
}

/** Routes requests to a {@linkcode FileSystem}. One per session. */
export class Dispatcher {
  /** The file system served. */
  readonly fs: FileSystem;
  /** Handles whose data is an fd (`OpenReply.backingFd`), shared with the queue threads. */
  readonly backingFds: BackingFdTable;
  /** Interrupted requests, posted by whichever dispatcher reads INTERRUPT. */
  readonly interrupts: InterruptBoard;
  /** Requests in progress whose method asked for `ctx.signal`. */
  #signals = new Map<number, AbortController>();
  #pollTimer: ReturnType<typeof setInterval> | undefined;
  /** Notify retrieves waiting for the kernel's NOTIFY_REPLY, by notify unique. */
  #retrieves = new Map<number, (data: Uint8Array) => void>();
  #nextRetrieve = 1;
  #options: DispatcherOptions;
  #entryTimeout: number;
  #attrTimeout: number;
  #debug?: (line: string) => void;
  #conn: Connection | null = null;
  #setxattrExt = false;
  #complained = new Set<string>();
  /** `#signalOf`, bound once: every request's context refers to it. */
  readonly #signalFor = (unique: number) => this.#signalOf(unique);
  #initResolve!: (c: Connection) => void;
  #initReject!: (e: Error) => void;
  /** Settles when INIT has been answered (rejects if it was refused). */
  readonly initialized: Promise<Connection>;

  /** Serve `fs` with `options`. */
  constructor(fs: FileSystem, options: DispatcherOptions = {}) {
    this.fs = fs;
    this.#options = options;
    this.backingFds = options.backingFds ?? new BackingFdTable();
    this.interrupts = options.interrupts ?? new InterruptBoard();
    this.#entryTimeout = options.entryTimeout ?? 1;
    this.#attrTimeout = options.attrTimeout ?? 1;
    const debug = options.debug;
    if (debug) {
      // The author's callback must not take a request down with it.
      this.#debug = (line) => {
        try {
          debug(line);
        } catch (e) {
          this.#complain("the debug callback", e);
        }
      };
    }
    this.initialized = new Promise((resolve, reject) => {
      this.#initResolve = resolve;
      this.#initReject = reject;
    });
    this.initialized.catch(() => {});
  }

  /** The state agreed at INIT, or null before it. */
  get connection(): Connection | null {
    return this.#conn;
  }

  /** Bytes of fixed argument the kernel sends with `opcode`. */
  argSize(opcode: number): number {
    if (opcode === Opcode.SETXATTR && this.#setxattrExt) return SetxattrIn.SIZE;
    return ARG_SIZE[opcode] ?? 0;
  }

  /** Handle one request. Never throws; every path replies or releases `ex`. */
  dispatch(ex: Exchange): void {
    const h = ex.header;
    const o = ex.headerOffset;
    const opcode = h.getUint32(o + InHeader.opcode, true);
    const unique = getU64(h, o + InHeader.unique);
    const nodeId = getU64(h, o + InHeader.nodeid);
    if (this.#debug) {
      this.#debug(
        `unique: ${unique}, opcode: ${opcodeName(opcode)} (${opcode}), ` +
          `nodeid: ${nodeId}, insize: ${h.getUint32(o + InHeader.len, true)}, pid: ${
            h.getUint32(o + InHeader.pid, true)
          }`,
      );
    }
    if (opcode === Opcode.FORGET || opcode === Opcode.BATCH_FORGET) {
      this.#forget(ex, opcode, nodeId);
      return;
    }
    if (ex.argLength < this.argSize(opcode)) {
      this.#reply(ex, unique, -Errno.EINVAL, 0);
      if (opcode === Opcode.INIT) this.#initReject(new Error("INIT shorter than fuse_init_in"));
      return;
    }
    if (this.#conn === null && opcode !== Opcode.INIT) {
      this.#reply(ex, unique, -Errno.EIO, 0);
      return;
    }
    const signalFor = this.#signalFor;
    const ctx: RequestContext = {
      unique,
      uid: h.getUint32(o + InHeader.uid, true),
      gid: h.getUint32(o + InHeader.gid, true),
      pid: h.getUint32(o + InHeader.pid, true),
      io: ex.io,
      killSuidgid: this.#killSuidgid(ex.arg, ex.argOffset, opcode),
      get signal() {
        return signalFor(unique);
      },
    };
    try {
      this.#route(ex, opcode, unique, nodeId, ctx);
    } catch (e) {
      this.#replyError(ex, unique, e, opcode);
    }
  }

  /** Whether the kernel asks to clear setuid/setgid with this request. */
  #killSuidgid(a: DataView, ao: number, opcode: number): boolean {
    switch (opcode) {
      case Opcode.WRITE:
        return (a.getUint32(ao + WriteIn.write_flags, true) & FUSE_WRITE_KILL_SUIDGID) !== 0;
      case Opcode.OPEN:
        return (a.getUint32(ao + OpenIn.open_flags, true) & FUSE_OPEN_KILL_SUIDGID) !== 0;
      case Opcode.CREATE:
        return (a.getUint32(ao + CreateIn.open_flags, true) & FUSE_OPEN_KILL_SUIDGID) !== 0;
      default:
        return false;
    }
  }

  #route(
    ex: Exchange,
    op: number,
    unique: number,
    nodeId: number,
    ctx: RequestContext,
  ): void {
    const fs = this.fs;
    const a = ex.arg;
    const ao = ex.argOffset;
    const out = ex.out;
    const oo = ex.outOffset;
    const entry = (e: Entry) => encodeEntry(out, oo, e, this.#entryTimeout, this.#attrTimeout);
    const attr = (v: Attr) => encodeAttrOut(out, oo, v, this.#attrTimeout);
    const none = () => 0;
    const open = (r: OpenReply) => encodeOpen(out, oo, r);
    // Entered before the reply leaves, so the handle's first READ finds it.
    const backed = (r: OpenReply) => {
      if (r.backingFd !== undefined) this.backingFds.set(r.fh ?? 0, r.backingFd);
    };

    switch (op) {
      case Opcode.INIT:
        return this.#init(ex, unique);
      case Opcode.NOTIFY_REPLY: {
        // The kernel's answer to a retrieve notification (see Notifier): no reply.
        const deliver = this.#retrieves.get(unique);
        if (deliver) {
          const size = Math.min(a.getUint32(ao + NotifyRetrieveIn.size, true), ex.dataLength);
          deliver(ex.data.slice(ex.dataOffset, ex.dataOffset + size));
        }
        return ex.noReply();
      }
      case Opcode.INTERRUPT: {
        // No reply: the interrupted request answers (EINTR if it gives up).
        const target = getU64(a, ao + InterruptIn.unique);
        this.interrupts.post(target);
        this.#signals.get(target)?.abort(new FuseError(Errno.EINTR));
        return ex.noReply();
      }
      case Opcode.DESTROY:
        return this.#call(ex, op, unique, () => fs.destroy?.(), none);
      case Opcode.LOOKUP: {
        if (!fs.lookup) break;
        const name = this.#name(ex, 0);
        return this.#call(ex, op, unique, () => fs.lookup!(ctx, nodeId, name), entry);
      }
      case Opcode.GETATTR: {
        if (!fs.getattr) break;
        const fh = a.getUint32(ao + GetattrIn.getattr_flags, true) & FUSE_GETATTR_FH
          ? getU64(a, ao + GetattrIn.fh)
          : undefined;
        return this.#call(ex, op, unique, () => fs.getattr!(ctx, nodeId, fh), attr);
      }
      case Opcode.STATX: {
        if (!fs.statx) break;
        const fh = a.getUint32(ao + StatxIn.getattr_flags, true) & FUSE_GETATTR_FH
          ? getU64(a, ao + StatxIn.fh)
          : undefined;
        const flags = a.getUint32(ao + StatxIn.sx_flags, true);
        const mask = a.getUint32(ao + StatxIn.sx_mask, true);
        return this.#call(
          ex,
          op,
          unique,
          () => fs.statx!(ctx, nodeId, fh, flags, mask),
          (stx) => {
            if (stx.length < 256) fail(Errno.EIO);
            return encodeStatxOut(out, ex.outBytes, oo, stx, this.#attrTimeout);
          },
        );
      }
      case Opcode.SETATTR: {
        if (!fs.setattr) break;
        const changes = decodeSetattr(a, ao);
        return this.#call(ex, op, unique, () => fs.setattr!(ctx, nodeId, changes), attr);
      }
      case Opcode.READLINK: {
        if (!fs.readlink) break;
        return this.#call(ex, op, unique, () => fs.readlink!(ctx, nodeId), (t) => {
          const bytes = typeof t === "string" ? encoder.encode(t) : t;
          if (bytes.length > ex.outCapacity) fail(Errno.ENAMETOOLONG);
          ex.outBytes.set(bytes, oo);
          return bytes.length;
        });
      }
      case Opcode.SYMLINK: {
        if (!fs.symlink) break;
        const [name, end] = this.#nameAt(ex, 0);
        const target = this.#name(ex, end);
        return this.#call(ex, op, unique, () => fs.symlink!(ctx, nodeId, name, target), entry);
      }
      case Opcode.MKNOD: {
        if (!fs.mknod) break;
        const name = this.#name(ex, 0);
        const mode = a.getUint32(ao + MknodIn.mode, true);
        const rdev = a.getUint32(ao + MknodIn.rdev, true);
        const umask = a.getUint32(ao + MknodIn.umask, true);
        return this.#call(
          ex,
          op,
          unique,
          () => fs.mknod!(ctx, nodeId, name, mode, rdev, umask),
          entry,
        );
      }
      case Opcode.MKDIR: {
        if (!fs.mkdir) break;
        const name = this.#name(ex, 0);
        const mode = a.getUint32(ao + MkdirIn.mode, true);
        const umask = a.getUint32(ao + MkdirIn.umask, true);
        return this.#call(ex, op, unique, () => fs.mkdir!(ctx, nodeId, name, mode, umask), entry);
      }
      case Opcode.UNLINK: {
        if (!fs.unlink) break;
        const name = this.#name(ex, 0);
        return this.#call(ex, op, unique, () => fs.unlink!(ctx, nodeId, name), none);
      }
      case Opcode.RMDIR: {
        if (!fs.rmdir) break;
        const name = this.#name(ex, 0);
        return this.#call(ex, op, unique, () => fs.rmdir!(ctx, nodeId, name), none);
      }
      case Opcode.RENAME:
      case Opcode.RENAME2: {
        if (!fs.rename) break;
        const newParent = getU64(a, ao + RenameIn.newdir);
        const flags = op === Opcode.RENAME2 ? a.getUint32(ao + Rename2In.flags, true) : 0;
        const [name, end] = this.#nameAt(ex, 0);
        const newName = this.#name(ex, end);
        return this.#call(
          ex,
          op,
          unique,
          () => fs.rename!(ctx, nodeId, name, newParent, newName, flags),
          none,
        );
      }
      case Opcode.LINK: {
        if (!fs.link) break;
        const oldNode = getU64(a, ao + LinkIn.oldnodeid);
        const name = this.#name(ex, 0);
        return this.#call(ex, op, unique, () => fs.link!(ctx, oldNode, nodeId, name), entry);
      }
      case Opcode.OPEN:
      case Opcode.OPENDIR: {
        const flags = a.getUint32(ao + OpenIn.flags, true);
        const method = op === Opcode.OPEN ? fs.open : fs.opendir;
        if (!method) return this.#reply(ex, unique, 0, open({}));
        return this.#call(ex, op, unique, () => method.call(fs, ctx, nodeId, flags), (r) => {
          if (op === Opcode.OPEN) backed(r);
          return open(r);
        });
      }
      case Opcode.CREATE: {
        if (!fs.create) break;
        const name = this.#name(ex, 0);
        const flags = a.getUint32(ao + CreateIn.flags, true);
        const mode = a.getUint32(ao + CreateIn.mode, true);
        const umask = a.getUint32(ao + CreateIn.umask, true);
        return this.#call(
          ex,
          op,
          unique,
          () => fs.create!(ctx, nodeId, name, mode, flags, umask),
          (r) => {
            const n = entry(r.entry);
            backed(r);
            return n + encodeOpen(out, oo + n, r);
          },
        );
      }
      case Opcode.READ: {
        const fh = getU64(a, ao + ReadIn.fh);
        const offset = getU64(a, ao + ReadIn.offset);
        const size = Math.min(a.getUint32(ao + ReadIn.size, true), ex.outCapacity);
        const fd = this.backingFds.get(fh);
        if (fd >= 0) return this.#read(ex, unique, () => ({ fd, offset, length: size }), size);
        if (!fs.read) break;
        return this.#read(ex, unique, () => fs.read!(ctx, nodeId, fh, offset, size), size);
      }
      case Opcode.WRITE: {
        const fh = getU64(a, ao + WriteIn.fh);
        const offset = getU64(a, ao + WriteIn.offset);
        const size = a.getUint32(ao + WriteIn.size, true);
        const flags = a.getUint32(ao + WriteIn.flags, true);
        if (size > ex.dataLength) fail(Errno.EINVAL);
        ex.dataLength = size;
        const fd = this.backingFds.get(fh);
        if (fd >= 0) {
          return this.#write(ex, unique, () => ({ fd, offset }), ctx.killSuidgid);
        }
        if (!fs.write) break;
        const data = ex.data.subarray(ex.dataOffset, ex.dataOffset + size);
        return this.#write(ex, unique, () => fs.write!(ctx, nodeId, fh, offset, data, flags));
      }
      case Opcode.STATFS: {
        if (!fs.statfs) return this.#reply(ex, unique, 0, encodeStatfs(out, oo, {}));
        return this.#call(
          ex,
          op,
          unique,
          () => fs.statfs!(ctx, nodeId),
          (s) => encodeStatfs(out, oo, s),
        );
      }
      case Opcode.RELEASE:
      case Opcode.RELEASEDIR: {
        const fh = getU64(a, ao + ReleaseIn.fh);
        const flags = a.getUint32(ao + ReleaseIn.flags, true);
        if (op === Opcode.RELEASE) {
          this.backingFds.delete(fh);
          if (!fs.release) return this.#reply(ex, unique, 0, 0);
          return this.#call(ex, op, unique, () => fs.release!(ctx, nodeId, fh, flags), none);
        }
        if (!fs.releasedir) return this.#reply(ex, unique, 0, 0);
        return this.#call(ex, op, unique, () => fs.releasedir!(ctx, nodeId, fh), none);
      }
      case Opcode.FSYNC:
      case Opcode.FSYNCDIR: {
        const method = op === Opcode.FSYNC ? fs.fsync : fs.fsyncdir;
        if (!method) break;
        const fh = getU64(a, ao + FsyncIn.fh);
        const datasync = (a.getUint32(ao + FsyncIn.fsync_flags, true) & FUSE_FSYNC_FDATASYNC) !== 0;
        return this.#call(ex, op, unique, () => method.call(fs, ctx, nodeId, fh, datasync), none);
      }
      case Opcode.FLUSH: {
        if (!fs.flush) break;
        const fh = getU64(a, ao + FlushIn.fh);
        const owner = a.getBigUint64(ao + FlushIn.lock_owner, true);
        return this.#call(ex, op, unique, () => fs.flush!(ctx, nodeId, fh, owner), none);
      }
      case Opcode.SETXATTR: {
        if (!fs.setxattr) break;
        const size = a.getUint32(ao + SetxattrIn.size, true);
        const flags = a.getUint32(ao + SetxattrIn.flags, true);
        const [name, end] = this.#nameAt(ex, 0);
        if (end + size > ex.dataLength) fail(Errno.EINVAL);
        const value = ex.data.slice(ex.dataOffset + end, ex.dataOffset + end + size);
        return this.#call(
          ex,
          op,
          unique,
          () => fs.setxattr!(ctx, nodeId, name, value, flags),
          none,
        );
      }
      case Opcode.GETXATTR: {
        if (!fs.getxattr) break;
        const size = a.getUint32(ao + GetxattrIn.size, true);
        const name = this.#name(ex, 0);
        return this.#call(
          ex,
          op,
          unique,
          () => fs.getxattr!(ctx, nodeId, name),
          (v) => this.#sizedReply(ex, v, size),
        );
      }
      case Opcode.LISTXATTR: {
        if (!fs.listxattr) break;
        const size = a.getUint32(ao + GetxattrIn.size, true);
        return this.#call(
          ex,
          op,
          unique,
          () => fs.listxattr!(ctx, nodeId),
          (names) =>
            this.#sizedReply(ex, encoder.encode(names.map((n) => n + "\0").join("")), size),
        );
      }
      case Opcode.REMOVEXATTR: {
        if (!fs.removexattr) break;
        const name = this.#name(ex, 0);
        return this.#call(ex, op, unique, () => fs.removexattr!(ctx, nodeId, name), none);
      }
      case Opcode.ACCESS: {
        if (!fs.access) break;
        const mask = a.getUint32(ao + AccessIn.mask, true);
        return this.#call(ex, op, unique, () => fs.access!(ctx, nodeId, mask), none);
      }
      case Opcode.READDIR:
      case Opcode.READDIRPLUS: {
        const fh = getU64(a, ao + ReadIn.fh);
        const offset = getU64(a, ao + ReadIn.offset);
        const size = Math.min(a.getUint32(ao + ReadIn.size, true), ex.outCapacity);
        if (op === Opcode.READDIR) {
          if (!fs.readdir) break;
          const list = new DirectoryList(ex.outBytes, out, oo, size);
          return this.#call(
            ex,
            op,
            unique,
            () => fs.readdir!(ctx, nodeId, fh, offset, list),
            () => list.length,
          );
        }
        if (!fs.readdirplus) break;
        const list = new DirectoryPlusList(
          ex.outBytes,
          out,
          oo,
          size,
          this.#entryTimeout,
          this.#attrTimeout,
        );
        return this.#call(
          ex,
          op,
          unique,
          () => fs.readdirplus!(ctx, nodeId, fh, offset, list),
          () => list.length,
        );
      }
      case Opcode.FALLOCATE: {
        if (!fs.fallocate) break;
        const fh = getU64(a, ao + FallocateIn.fh);
        const offset = getU64(a, ao + FallocateIn.offset);
        const length = getU64(a, ao + FallocateIn.length);
        const mode = a.getUint32(ao + FallocateIn.mode, true);
        return this.#call(
          ex,
          op,
          unique,
          () => fs.fallocate!(ctx, nodeId, fh, offset, length, mode),
          none,
        );
      }
      case Opcode.LSEEK: {
        if (!fs.lseek) break;
        const fh = getU64(a, ao + LseekIn.fh);
        const offset = getU64(a, ao + LseekIn.offset);
        const whence = a.getUint32(ao + LseekIn.whence, true);
        return this.#call(
          ex,
          op,
          unique,
          () => fs.lseek!(ctx, nodeId, fh, offset, whence),
          (pos) => (setU64(out, oo + LseekOut.offset, pos), LseekOut.SIZE),
        );
      }
      case Opcode.GETLK: {
        if (!fs.getlk) break;
        const fh = getU64(a, ao + LkIn.fh);
        const owner = a.getBigUint64(ao + LkIn.owner, true);
        const lock = decodeLock(a, ao + LkIn.lk);
        return this.#call(ex, op, unique, () => fs.getlk!(ctx, nodeId, fh, owner, lock), (l) => {
          encodeLock(out, oo + LkOut.lk, l);
          return LkOut.SIZE;
        });
      }
      case Opcode.SETLK:
      case Opcode.SETLKW: {
        const fh = getU64(a, ao + LkIn.fh);
        const owner = a.getBigUint64(ao + LkIn.owner, true);
        const lock = decodeLock(a, ao + LkIn.lk);
        const wait = op === Opcode.SETLKW;
        if (a.getUint32(ao + LkIn.lk_flags, true) & FUSE_LK_FLOCK) {
          if (!fs.flock) break;
          return this.#call(
            ex,
            op,
            unique,
            () => fs.flock!(ctx, nodeId, fh, owner, lock.type, wait),
            none,
          );
        }
        if (!fs.setlk) break;
        return this.#call(
          ex,
          op,
          unique,
          () => fs.setlk!(ctx, nodeId, fh, owner, lock, wait),
          none,
        );
      }
      case Opcode.COPY_FILE_RANGE:
      case Opcode.COPY_FILE_RANGE_64: {
        if (!fs.copyFileRange) break;
        const c = CopyFileRangeIn;
        const fhIn = getU64(a, ao + c.fh_in);
        const offIn = getU64(a, ao + c.off_in);
        const nodeOut = getU64(a, ao + c.nodeid_out);
        const fhOut = getU64(a, ao + c.fh_out);
        const offOut = getU64(a, ao + c.off_out);
        const len = getU64(a, ao + c.len);
        const flags = getU64(a, ao + c.flags);
        return this.#call(
          ex,
          op,
          unique,
          () => fs.copyFileRange!(ctx, nodeId, fhIn, offIn, nodeOut, fhOut, offOut, len, flags),
          (n) => {
            if (op === Opcode.COPY_FILE_RANGE_64) {
              setU64(out, oo + CopyFileRangeOut.bytes_copied, n);
              return CopyFileRangeOut.SIZE;
            }
            out.setUint32(oo + WriteOut.size, Math.min(n, 0xffffffff), true);
            out.setUint32(oo + 4, 0, true);
            return WriteOut.SIZE;
          },
        );
      }
    }
    this.#reply(ex, unique, -Errno.ENOSYS, 0);
  }

  /** Run a method, then encode its result or its error, sync or async. */
  #call<T>(
    ex: Exchange,
    opcode: number,
    unique: number,
    invoke: () => MaybePromise<T>,
    encode: (value: T) => number,
  ): void {
    let result: MaybePromise<T>;
    try {
      result = invoke();
    } catch (e) {
      return this.#replyError(ex, unique, e, opcode);
    }
    if (result instanceof Promise) {
      result.then(
        (v) => this.#finish(ex, opcode, unique, v, encode),
        (e) => this.#replyError(ex, unique, e, opcode),
      );
    } else {
      this.#finish(ex, opcode, unique, result, encode);
    }
  }

  #finish<T>(
    ex: Exchange,
    opcode: number,
    unique: number,
    value: T,
    encode: (value: T) => number,
  ): void {
    let length: number;
    try {
      length = encode(value);
    } catch (e) {
      return this.#replyError(ex, unique, e, opcode);
    }
    this.#reply(ex, unique, 0, length);
  }

  #read(
    ex: Exchange,
    unique: number,
    invoke: () => MaybePromise<ReadReply>,
    size: number,
  ): void {
    this.#call(ex, Opcode.READ, unique, invoke, (r): number => {
      if (r instanceof Uint8Array) {
        const n = Math.min(r.length, size);
        ex.outBytes.set(n === r.length ? r : r.subarray(0, n), ex.outOffset);
        return n;
      }
      // The transport fetches the data and replies itself, also on failure.
      if (this.#debug) this.#debug(`   unique: ${unique}, data from fd ${r.fd}`);
      ex.replyFromFd(unique, r.fd, r.offset, Math.min(r.length, size));
      return -1;
    });
  }

  #write(
    ex: Exchange,
    unique: number,
    invoke: () => MaybePromise<WriteReply>,
    killSuidgid = false,
  ): void {
    const encode = (n: number) => {
      ex.out.setUint32(ex.outOffset + WriteOut.size, n, true);
      ex.out.setUint32(ex.outOffset + 4, 0, true);
      return WriteOut.SIZE;
    };
    this.#call(ex, Opcode.WRITE, unique, invoke, (r): number => {
      if (typeof r === "number") return encode(r);
      const written = ex.writeDataToFd(r.fd, r.offset, killSuidgid);
      if (typeof written === "number") return encode(written);
      written.then(
        (n) => this.#reply(ex, unique, 0, encode(n)),
        (e) => this.#replyError(ex, unique, e, Opcode.WRITE),
      );
      return -1;
    });
  }

  /** Reply to getxattr/listxattr: the size when asked (size 0), else the bytes. */
  #sizedReply(ex: Exchange, value: Uint8Array, size: number): number {
    if (size === 0) {
      ex.out.setUint32(ex.outOffset + GetxattrOut.size, value.length, true);
      ex.out.setUint32(ex.outOffset + 4, 0, true);
      return GetxattrOut.SIZE;
    }
    if (value.length > size || value.length > ex.outCapacity) fail(Errno.ERANGE);
    ex.outBytes.set(value, ex.outOffset);
    return value.length;
  }

  #forget(ex: Exchange, opcode: number, nodeId: number): void {
    try {
      const forget = this.fs.forget;
      if (!forget) return;
      if (opcode === Opcode.FORGET) {
        if (ex.argLength < ForgetIn.SIZE) return;
        forget.call(this.fs, nodeId, getU64(ex.arg, ex.argOffset + ForgetIn.nlookup));
        return;
      }
      if (ex.argLength < BatchForgetIn.SIZE) return;
      const count = ex.arg.getUint32(ex.argOffset + BatchForgetIn.count, true);
      const d = ex.data;
      const view = new DataView(d.buffer, d.byteOffset + ex.dataOffset, ex.dataLength);
      const n = Math.min(count, Math.floor(ex.dataLength / ForgetOne.SIZE));
      for (let i = 0; i < n; i++) {
        const at = i * ForgetOne.SIZE;
        forget.call(
          this.fs,
          getU64(view, at + ForgetOne.nodeid),
          getU64(view, at + ForgetOne.nlookup),
        );
      }
    } catch (e) {
      this.#unexpected(e, opcode);
    } finally {
      ex.noReply();
    }
  }

  #init(ex: Exchange, unique: number): void {
    // The kernel sends one INIT per connection; another is not to be obeyed.
    if (this.#conn !== null) return this.#reply(ex, unique, -Errno.EPROTO, 0);
    const kernel = decodeInitIn(ex.arg, ex.argOffset, ex.argLength);
    const fs = this.fs;
    const result = negotiate(kernel, {
      ...this.#options,
      readdirplus: this.#options.readdirplus ?? typeof fs.readdirplus === "function",
      // Locks the file system keeps; without them the kernel keeps them, per mount.
      posixLocks: this.#options.posixLocks ??
        (typeof fs.getlk === "function" && typeof fs.setlk === "function"),
      flockLocks: this.#options.flockLocks ?? typeof fs.flock === "function",
    });
    if (result.kind === "refuse") {
      this.#reply(ex, unique, -Errno.EPROTO, 0);
      this.#initReject(new Error(result.reason));
      return;
    }
    ex.outBytes.set(result.reply, ex.outOffset);
    if (result.kind === "retry") {
      this.#reply(ex, unique, 0, result.reply.length);
      return;
    }
    const conn: Connection = {
      minor: result.minor,
      flags: result.flags,
      maxWrite: result.maxWrite,
      maxRead: result.maxRead,
    };
    this.#setxattrExt = (result.flags & InitFlag.SETXATTR_EXT) !== 0n;
    const info = connectionInfo(conn);
    if (this.#debug) {
      this.#debug(
        `INIT: kernel ${kernel.major}.${kernel.minor} offers ${
          initFlagNames(kernel.flags).join(",")
        }`,
      );
      this.#debug(
        `INIT: agreed 7.${conn.minor}, max_write ${conn.maxWrite}, flags ${info.flags.join(",")}`,
      );
    }
    Promise.resolve().then(() => fs.init?.(info)).then(() => {
      this.#conn = conn;
      this.#reply(ex, unique, 0, result.reply.length);
      this.#initResolve(conn);
    }, (e) => {
      this.#replyError(ex, unique, e, Opcode.INIT);
      this.#initReject(e instanceof Error ? e : new Error(String(e)));
    });
  }

  /**
   * Serve a connection whose INIT another dispatcher answered (the one on
   * the session's thread): for a dispatcher in a queue thread. Runs the
   * file system's `init` first.
   */
  async adopt(conn: Connection): Promise<void> {
    this.#setxattrExt = (conn.flags & InitFlag.SETXATTR_EXT) !== 0n;
    await this.fs.init?.(connectionInfo(conn));
    this.#conn = conn;
    this.#initResolve(conn);
  }

  /** Decode the NUL-terminated name starting `from` bytes into the data. */
  #name(ex: Exchange, from: number): string {
    return this.#nameAt(ex, from)[0];
  }

  /** The name at `from` and the offset just past its NUL. */
  #nameAt(ex: Exchange, from: number): [string, number] {
    const d = ex.data;
    const start = ex.dataOffset + from;
    const limit = ex.dataOffset + ex.dataLength;
    const nul = d.indexOf(0, start);
    if (nul < 0 || nul >= limit) fail(Errno.EINVAL);
    let name: string;
    try {
      name = decoder.decode(d.subarray(start, nul));
    } catch {
      // Names are JavaScript strings; bytes that are not UTF-8 cannot be
      // represented faithfully, so refuse rather than corrupt them.
      fail(Errno.EILSEQ);
    }
    return [name, nul + 1 - ex.dataOffset];
  }

  /**
   * @internal A notify unique for a retrieve, and the promise of the data
   * the kernel's NOTIFY_REPLY carries (rejected after `timeoutMs`).
   */
  expectNotifyReply(timeoutMs: number): [number, Promise<Uint8Array>] {
    const unique = this.#nextRetrieve++;
    const reply = new Promise<Uint8Array>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#retrieves.delete(unique);
        reject(new FuseError(Errno.ETIMEDOUT));
      }, timeoutMs);
      this.#retrieves.set(unique, (data) => {
        clearTimeout(timer);
        this.#retrieves.delete(unique);
        resolve(data);
      });
    });
    return [unique, reply];
  }

  /** @internal A retrieve that was never sent: forget it. */
  cancelNotifyReply(unique: number): void {
    this.#retrieves.get(unique)?.(new Uint8Array(0));
  }

  /** The AbortSignal of request `unique`, made on first use (see `RequestContext.signal`). */
  #signalOf(unique: number): AbortSignal {
    let controller = this.#signals.get(unique);
    if (controller) return controller.signal;
    controller = new AbortController();
    this.#signals.set(unique, controller);
    if (this.interrupts.has(unique)) controller.abort(new FuseError(Errno.EINTR));
    // Interrupts read by another thread's dispatcher reach this one by looking.
    if (this.#pollTimer === undefined) {
      this.#pollTimer = setInterval(() => {
        for (const [u, c] of this.#signals) {
          if (!c.signal.aborted && this.interrupts.has(u)) c.abort(new FuseError(Errno.EINTR));
        }
      }, INTERRUPT_POLL_MS);
      Deno.unrefTimer(this.#pollTimer);
    }
    return controller.signal;
  }

  /** Request `unique` is answered: its signal is no longer watched. */
  #settled(unique: number): void {
    if (!this.#signals.delete(unique) || this.#signals.size > 0) return;
    clearInterval(this.#pollTimer);
    this.#pollTimer = undefined;
  }

  /** Send a reply (`length` -1: the reply was already sent by the transport). */
  #reply(ex: Exchange, unique: number, error: number, length: number): void {
    if (this.#signals.size > 0) this.#settled(unique);
    if (length < 0) return;
    if (this.#debug) {
      this.#debug(
        error === 0
          ? `   unique: ${unique}, success, outsize: ${OutHeader.SIZE + length}`
          : `   unique: ${unique}, error: ${error} (${
            errnoName(-error)
          }), outsize: ${OutHeader.SIZE}`,
      );
    }
    try {
      ex.reply(unique, error, error === 0 ? length : 0);
    } catch (e) {
      // Transports end serving themselves when they cannot reply; this is
      // the last guard, so that no throw escapes into a promise reaction.
      this.#complain("a reply", e);
    }
  }

  #replyError(ex: Exchange, unique: number, e: unknown, opcode: number): void {
    let errno: number;
    if (e instanceof FuseError || e instanceof SystemError) {
      errno = e.errno;
    } else {
      this.#unexpected(e, opcode);
      errno = Errno.EIO;
    }
    if (!(errno > 0 && errno < 4096)) errno = Errno.EIO;
    this.#reply(ex, unique, -errno, 0);
  }

  #unexpected(e: unknown, opcode: number): void {
    const onError = this.#options.onError ??
      ((err, op) => console.error(`denofuse: ${op} failed:`, err));
    try {
      onError(e, opcodeName(opcode));
    } catch (thrown) {
      this.#complain("the onError callback", thrown);
    }
  }

  /** Report, once per `what`, something that threw where nothing can answer for it. */
  #complain(what: string, e: unknown): void {
    if (this.#complained.has(what)) return;
    this.#complained.add(what);
    console.error(`denofuse: ${what} threw (reported once):`, e);
  }
}

/** Decode a `struct fuse_file_lock` at `o`. */
function decodeLock(a: DataView, o: number): FileLock {
  return {
    start: getU64(a, o + FileLockLayout.start),
    end: getU64(a, o + FileLockLayout.end),
    type: a.getUint32(o + FileLockLayout.type, true),
    pid: a.getUint32(o + FileLockLayout.pid, true),
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

/** Decode `fuse_setattr_in` into a {@linkcode SetAttr}. */
export function decodeSetattr(a: DataView, ao: number): SetAttr {
  const valid = a.getUint32(ao + SetattrIn.valid, true);
  const s: SetAttr = {};
  if (valid & FATTR.MODE) s.mode = a.getUint32(ao + SetattrIn.mode, true);
  if (valid & FATTR.UID) s.uid = a.getUint32(ao + SetattrIn.uid, true);
  if (valid & FATTR.GID) s.gid = a.getUint32(ao + SetattrIn.gid, true);
  if (valid & FATTR.SIZE) s.size = getU64(a, ao + SetattrIn.size);
  if (valid & FATTR.FH) s.fh = getU64(a, ao + SetattrIn.fh);
  if (valid & FATTR.ATIME_NOW) s.atime = "now";
  else if (valid & FATTR.ATIME) {
    s.atime = {
      sec: Number(a.getBigInt64(ao + SetattrIn.atime, true)),
      nsec: a.getUint32(ao + SetattrIn.atimensec, true),
    };
  }
  if (valid & FATTR.MTIME_NOW) s.mtime = "now";
  else if (valid & FATTR.MTIME) {
    s.mtime = {
      sec: Number(a.getBigInt64(ao + SetattrIn.mtime, true)),
      nsec: a.getUint32(ao + SetattrIn.mtimensec, true),
    };
  }
  if (valid & FATTR.CTIME) {
    s.ctime = {
      sec: Number(a.getBigInt64(ao + SetattrIn.ctime, true)),
      nsec: a.getUint32(ao + SetattrIn.ctimensec, true),
    };
  }
  if (valid & FATTR.KILL_SUIDGID) s.killSuidgid = true;
  return s;
}
