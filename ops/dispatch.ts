/**
 * The dispatcher: reads a request's header from an {@linkcode Exchange},
 * looks its opcode up in the operation table (ops/operations.ts: decoder,
 * FileSystem method, encoder, default), runs those steps, and replies. The
 * protocol's own messages (INIT, FORGET, INTERRUPT, ...) it answers itself.
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
  BatchForgetIn,
  ForgetIn,
  ForgetOne,
  InHeader,
  InitFlag,
  initFlagNames,
  InitIn,
  InterruptIn,
  NotifyRetrieveIn,
  Opcode,
  opcodeName,
  OutHeader,
  SetxattrIn,
} from "./abi.ts";
import { getU64 } from "./codec.ts";
import { AnswerError } from "./answers.ts";
import { BackingFdTable } from "./backing_fds.ts";
import { Context } from "./context.ts";
import type { BackingIds } from "./backing_ids.ts";
import { FuseError } from "./error.ts";
import type { Exchange } from "./exchange.ts";
import type { ConnectionInfo, FileSystem, MaybePromise, RequestContext } from "./filesystem.ts";
import { decodeInitIn, type InitOptions, negotiate } from "./init.ts";
import { InterruptBoard } from "./interrupts.ts";
import type { OperationContext, ServedOperation } from "./operation.ts";
import { OPERATIONS } from "./operations.ts";
import { serveBacked } from "./backed_data.ts";
import { Request } from "./request.ts";

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
  /**
   * Backing ids of the connection (shared with other threads'
   * dispatchers): used when INIT agrees on kernel passthrough.
   */
  backingIds?: BackingIds;
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
 * The protocol's own messages, which no FileSystem method answers, and the
 * size of their fixed struct. Everything else is in {@linkcode OPERATIONS}.
 */
const PROTOCOL_ARG_SIZE: Record<number, number> = {
  [Opcode.INIT]: InitIn.COMPAT_SIZE,
  [Opcode.DESTROY]: 0,
  [Opcode.FORGET]: ForgetIn.SIZE,
  [Opcode.BATCH_FORGET]: BatchForgetIn.SIZE,
  [Opcode.INTERRUPT]: InterruptIn.SIZE,
  [Opcode.NOTIFY_REPLY]: NotifyRetrieveIn.SIZE,
};

/** What a FileSystem's `init` is told of a connection. */
function connectionInfo(conn: Connection): ConnectionInfo {
  return {
    minor: conn.minor,
    maxWrite: conn.maxWrite,
    maxRead: conn.maxRead,
    flags: initFlagNames(conn.flags),
  };
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
  /** Whether a wait for interrupts posted by other threads is armed. */
  #watching = false;
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
  /** Methods that answered with the wrong shape (each is reported once). */
  #wrongAnswers = new Set<string>();
  /** `#signalOf`, bound once: every request's context refers to it. */
  readonly #signalFor = (unique: number) => this.#signalOf(unique);
  /** What the operation table's functions are given (see {@linkcode OperationContext}). */
  readonly #context: OperationContext & {
    backingIds: BackingIds | null;
    zeroCopyOpens: boolean;
  };
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
    this.#context = {
      entryTimeout: this.#entryTimeout,
      attrTimeout: this.#attrTimeout,
      backingFds: this.backingFds,
      debug: this.#debug,
      replyLater: (r, length) =>
        length.then(
          (n) => this.#reply(r.ex, r.unique, 0, n),
          (e) => this.#replyError(r.ex, r.unique, e, r.opcode),
        ),
      backingIds: null, // until INIT agrees on kernel passthrough
      zeroCopyOpens: false, // until io_uring queues serve with zero-copy
    };
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
    return OPERATIONS[opcode]?.request?.SIZE ?? PROTOCOL_ARG_SIZE[opcode] ?? 0;
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
    // File data of fd-backed handles: served from the fd, before any decoding.
    const data = opcode === Opcode.READ || opcode === Opcode.WRITE;
    if (data && serveBacked(ex, opcode, unique, this.backingFds, this.#replyTo)) return;
    const r = new Request(ex, opcode, unique, nodeId);
    try {
      const op = OPERATIONS[opcode];
      if (op) this.#serve(op, r);
      else this.#protocol(r);
    } catch (e) {
      this.#replyError(ex, unique, e, opcode);
    }
  }

  /**
   * Serve a FileSystem operation: decode its arguments, answer from the
   * method (or what the table says when the method is missing, ENOSYS by
   * default), encode the result.
   */
  #serve(entry: ServedOperation, r: Request): void {
    const op = entry.variant?.(r) ?? entry;
    const fs = this.fs;
    const method = fs[op.method] as ((...args: unknown[]) => unknown) | undefined;
    if (!method && !op.missing) {
      return this.#reply(r.ex, r.unique, -Errno.ENOSYS, 0);
    }
    const c = this.#context;
    const kill = op.killSuidgid;
    if (kill) r.killSuidgid = (r.u32(kill.field) & kill.bit) !== 0;
    const args = op.decode(r, c);
    op.before?.(args, c);
    let invoke: () => unknown;
    if (method) {
      const ctx = this.#contextOf(r);
      invoke = () => method.call(fs, ctx, ...args);
    } else if (op.missing) invoke = op.missing;
    else return this.#reply(r.ex, r.unique, -Errno.ENOSYS, 0);
    this.#call(r.ex, r.opcode, r.unique, invoke, (v) => {
      this.#checkAnswer(op, r, v);
      return op.encode(v, r, c, args);
    });
  }

  /**
   * Fail the request with EIO unless `value` has the shape `op`'s method
   * must answer: a wrong answer never reaches the encoder, the reply
   * buffer or the ring. Reported to `onError` once per method.
   */
  #checkAnswer(op: ServedOperation, r: Request, value: unknown): void {
    const problem = op.answer.problem(value, r);
    if (problem === undefined) return;
    const error = new AnswerError(op.method, problem, op.answer.expected);
    this.#debug?.(`   unique: ${r.unique}, ${error.message}`);
    if (!this.#wrongAnswers.has(op.method)) {
      this.#wrongAnswers.add(op.method);
      this.#unexpected(error, r.opcode);
    }
    throw new FuseError(Errno.EIO);
  }

  /** The RequestContext of `r` for a FileSystem method. */
  #contextOf(r: Request): RequestContext {
    const h = r.ex.header;
    const o = r.ex.headerOffset;
    return new Context(
      r.unique,
      h.getUint32(o + InHeader.uid, true),
      h.getUint32(o + InHeader.gid, true),
      h.getUint32(o + InHeader.pid, true),
      r.ex.io,
      r.killSuidgid,
      this.#signalFor,
    );
  }

  /** The protocol's own messages: INIT, DESTROY, INTERRUPT, NOTIFY_REPLY; ENOSYS for the rest. */
  #protocol(r: Request): void {
    const ex = r.ex;
    switch (r.opcode) {
      case Opcode.INIT:
        return this.#init(ex, r.unique);
      case Opcode.DESTROY:
        return this.#call(ex, r.opcode, r.unique, () => this.fs.destroy?.(), () => 0);
      case Opcode.INTERRUPT: {
        // No reply: the interrupted request answers (EINTR if it gives up).
        const target = r.u64(InterruptIn.unique);
        this.interrupts.post(target);
        this.#signals.get(target)?.abort(new FuseError(Errno.EINTR));
        return ex.noReply();
      }
      case Opcode.NOTIFY_REPLY: {
        // The kernel's answer to a retrieve notification (see Notifier): no reply.
        const deliver = this.#retrieves.get(r.unique);
        if (deliver) {
          const size = Math.min(r.u32(NotifyRetrieveIn.size), ex.dataLength);
          deliver(ex.data.slice(ex.dataOffset, ex.dataOffset + size));
        }
        return ex.noReply();
      }
    }
    this.#reply(ex, r.unique, -Errno.ENOSYS, 0);
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
    this.#agreed(result.flags);
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

  /** Take up what INIT agreed on that changes how requests are served. */
  #agreed(flags: bigint): void {
    this.#setxattrExt = (flags & InitFlag.SETXATTR_EXT) !== 0n;
    const passthrough = (flags & InitFlag.PASSTHROUGH) !== 0n;
    this.#context.backingIds = passthrough ? this.#options.backingIds ?? null : null;
  }

  /**
   * Answer opens served from a backing fd with FOPEN_IO_URING_ZERO_COPY: set
   * by the session once io_uring queues serve in a mode where the client's
   * pages of READ and WRITE go straight between that fd and the kernel.
   */
  set zeroCopyOpens(on: boolean) {
    this.#context.zeroCopyOpens = on;
  }

  /** Kernel passthrough's backing ids, when the connection has it; else null. */
  get backingIds(): BackingIds | null {
    return this.#context.backingIds;
  }

  /**
   * Serve a connection whose INIT another dispatcher answered (the one on
   * the session's thread): for a dispatcher in a queue thread. Runs the
   * file system's `init` first.
   */
  async adopt(conn: Connection): Promise<void> {
    this.#agreed(conn.flags);
    await this.fs.init?.(connectionInfo(conn));
    this.#conn = conn;
    this.#initResolve(conn);
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
    // Interrupts read by another thread's dispatcher reach this one through the board.
    if (!this.#watching) this.#watchInterrupts(this.interrupts.posts);
    return controller.signal;
  }

  /** While requests hold signals, abort those the board says were interrupted, as posts come. */
  #watchInterrupts(seen: number): void {
    this.#watching = true;
    this.interrupts.posted(seen).then(() => {
      const now = this.interrupts.posts;
      for (const [u, c] of this.#signals) {
        if (!c.signal.aborted && this.interrupts.has(u)) c.abort(new FuseError(Errno.EINTR));
      }
      if (this.#signals.size > 0) this.#watchInterrupts(now);
      else this.#watching = false;
    });
  }

  /** Send a reply (`length` -1: the reply was already sent by the transport). */
  /** {@linkcode #reply}, bound, for the backed data path. */
  #replyTo = (ex: Exchange, unique: number, error: number, length: number): void =>
    this.#reply(ex, unique, error, length);

  #reply(ex: Exchange, unique: number, error: number, length: number): void {
    // Answered: its signal is no longer watched.
    if (this.#signals.size > 0) this.#signals.delete(unique);
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
