/**
 * A mounted file system, made in phases as libfuse (`fuse_session_new`,
 * `_mount`, `_loop`) and fuser (`new`, handshake, `run`) make theirs:
 *
 * 1. **plan** (`plan.ts`): from the options and probes of this machine,
 *    the transport, io_uring depth and modes, and who mounts;
 * 2. **open** ({@linkcode SessionRuntime.open}): the `/dev/fuse` fd (opened
 *    here, or sent by fusermount3), the dispatcher, the /dev/fuse loop of
 *    this thread, then mount(2);
 * 3. **signals** (`signals.ts`), and serving /dev/fuse on this thread;
 * 4. **INIT** ({@linkcode SessionRuntime.initialized});
 * 5. **threads**: io_uring queues, or more /dev/fuse readers;
 * 6. **describe** for `-d`;
 *
 * and, when the /dev/fuse loop ends, an ordered close
 * ({@linkcode SessionRuntime.close}).
 *
 * @module
 */

import { fdLimit, raiseFdLimit } from "../ffi/fd_limit.ts";
import { Ring } from "../ffi/ring.ts";
import { InitFlag } from "../ops/abi.ts";
import { DEFAULT_MAX_WRITE } from "../ops/init.ts";
import { BackingIds } from "../ops/backing_ids.ts";
import { type Connection, Dispatcher } from "../ops/dispatch.ts";
import type { FileSystem } from "../ops/filesystem.ts";
import { DevThreads } from "./dev/threads.ts";
import { DevTransport } from "./dev/transport.ts";
import { type FusermountMount, fusermountMount, fusermountUnmounter } from "./mount/fusermount.ts";
import {
  abortFuseConnection,
  checkMountpoint,
  checkNotMountedTwice,
  closeFuseDevice,
  fuseConnectionAt,
  MountError,
  mountFuse,
  openFuseDevice,
  syscallUnmounter,
  type Unmounter,
} from "./mount/mount.ts";
import { Notifier } from "./notifier.ts";
import type { MountOptions, SessionCounters } from "./options.ts";
import {
  checkPlanOptions,
  planTransport,
  probeMachine,
  type TransportPlan,
  uringSlotSize,
} from "./plan.ts";
import { SessionSignals } from "./signals.ts";
import { PAYLOAD_MODES } from "./uring/modes/modes.ts";
import { UringQueues } from "./uring/queues.ts";
import type { UringMode } from "./uring/modes/mode.ts";
import { possibleCpus } from "./uring/transport.ts";
import { bundleQueueModule } from "./workers/bundle.ts";
import type { PerQueueFileSystem, PerQueueModule } from "./workers/messages.ts";

export type { MountOptions, SessionCounters } from "./options.ts";
export type { TransportChoice } from "./plan.ts";
export { SIGNAL_EXIT_GRACE_MS } from "./signals.ts";

/** What a {@linkcode Session} is made of. */
interface SessionParts {
  mountpoint: string;
  connection: Connection;
  runtime: SessionRuntime;
  fallbackReason: string | null;
  closed: Promise<void>;
}

/** A mounted, running file system. */
export class Session {
  /** The absolute mountpoint. */
  readonly mountpoint: string;
  /** The transport serving requests: `"io_uring"` or `"dev"`. */
  readonly transport: "io_uring" | "dev";
  /** Why io_uring is not used, when it is not. */
  readonly fallbackReason: string | null;
  /** How the io_uring queues take requests, when io_uring serves. */
  readonly uringMode: UringMode | null;
  /** What was agreed at INIT. */
  readonly connection: Connection;
  /** Who made the mount: this process with mount(2), or `fusermount3` for it. */
  readonly mountedBy: "mount" | "fusermount3";
  /** Settles when the session has ended and its resources are released. */
  readonly closed: Promise<void>;
  /**
   * Notifications to the kernel: invalidate cached attributes, data and
   * names, store or retrieve cached pages (see {@linkcode Notifier}).
   */
  readonly notify: Notifier;
  #runtime: SessionRuntime;
  #unmounted = false;

  /** @internal Use {@linkcode mount}. */
  constructor(parts: SessionParts) {
    const r = parts.runtime;
    this.#runtime = r;
    this.mountpoint = parts.mountpoint;
    this.connection = parts.connection;
    this.transport = r.uring ? "io_uring" : "dev";
    this.uringMode = r.uring?.mode ?? null;
    this.fallbackReason = parts.fallbackReason;
    this.mountedBy = r.plan.mountedBy;
    this.notify = r.notifier;
    this.closed = parts.closed;
  }

  /** Whether opens of whole backing files go to the kernel (FUSE_PASSTHROUGH was agreed). */
  get kernelPassthrough(): boolean {
    return this.#runtime.dispatcher.backingIds?.active ?? false;
  }

  /** Backing files the kernel holds for this session now (one per inode open in passthrough). */
  get backingFiles(): number {
    return this.#runtime.dispatcher.backingIds?.held ?? 0;
  }

  /** Request counts per transport, and fixed-buffer read/write counts. */
  get counters(): SessionCounters {
    const { uring, devThreads } = this.#runtime;
    // The session's thread answers requests read from its own fd and those
    // handed over by the /dev/fuse threads.
    const dev = { ...this.#runtime.dev.counters };
    const more = devThreads?.handedOver;
    if (more) {
      dev.replies += more.replies;
      dev.fdReads += more.fdReads;
      dev.fdWrites += more.fdWrites;
    }
    return {
      dev,
      ...(uring ? { uring: uring.counters, queues: uring.perQueueCounters } : {}),
      ...(devThreads ? { devThreads: devThreads.counters } : {}),
    };
  }

  /**
   * Threads that take requests from the kernel: those serving io_uring
   * queues (the calling thread among them when it serves some), or the
   * calling thread's /dev/fuse loop and the /dev/fuse Workers.
   */
  get threads(): number {
    const { uring, devThreads } = this.#runtime;
    return uring ? uring.threads : 1 + (devThreads?.threads ?? 0);
  }

  /** @internal Make queue thread `index` fail as a crash would (tests only). */
  [Symbol.for("denofuse.injectQueueFault")](index: number): void {
    const { uring, devThreads } = this.#runtime;
    if (uring) uring.injectFault(index);
    else devThreads?.injectFault(index);
  }

  /** Unmount and wait for the session to end. Safe to call twice. */
  async unmount(): Promise<void> {
    if (!this.#unmounted) {
      this.#unmounted = true;
      await this.#runtime.unmounter.unmount(this.mountpoint);
    }
    await this.closed;
  }

  /** `await using session = await mount(...)` unmounts at scope exit. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.unmount();
  }
}

/** Requests the /dev/fuse transport keeps in flight by default. */
const DEFAULT_IN_FLIGHT = 16;

/**
 * Everything a session holds from the moment its device is open, the
 * phases that fill it in, and the ordered close that empties it.
 */
class SessionRuntime {
  /** The io_uring queues, once started. */
  uring: UringQueues | null = null;
  /** More /dev/fuse readers, once started. */
  devThreads: DevThreads | null = null;
  /** The ring this thread's /dev/fuse loop reaps, if any. */
  devRing: Ring | null = null;
  /** Why the /dev/fuse loop has no ring, for `-d`. */
  devIoNote = "";
  /** Has what is prepared on {@linkcode devRing} submitted soon. */
  kick: () => void = () => {};
  /** Why a serving thread took the session down. */
  fatal: string | null = null;
  /** Set once the session has ended (the unmount was not only a detach). */
  ended = false;
  /** Settles when this thread's /dev/fuse loop ends. */
  devRunning: Promise<void> = Promise.resolve();
  readonly unmounter: Unmounter;
  /** The connection's number, to abort it also once the mount is detached. */
  connectionNumber: string | null = null;
  #signals: SessionSignals | null = null;

  private constructor(
    readonly fs: FileSystem,
    readonly path: string,
    readonly plan: TransportPlan,
    readonly options: MountOptions,
    readonly fd: number,
    readonly helper: FusermountMount | null,
    readonly dispatcher: Dispatcher,
    readonly dev: DevTransport,
    readonly notifier: Notifier,
  ) {
    this.unmounter = plan.mountedBy === "fusermount3" ? fusermountUnmounter : syscallUnmounter;
  }

  /**
   * Open the connection: the device (fusermount3 mounts first and sends
   * the fd; mount(2) needs the fd first), the dispatcher and this thread's
   * /dev/fuse transport, then mount. Undoes what it did if a step fails.
   */
  static async open(
    fs: FileSystem,
    path: string,
    plan: TransportPlan,
    options: MountOptions,
  ): Promise<SessionRuntime> {
    const helper = plan.mountedBy === "fusermount3" ? await fusermountMount(path, options) : null;
    const fd = helper ? helper.fd : openFuseDevice();
    const dispatcher = new Dispatcher(fs, {
      ...options,
      ioUring: plan.transport === "io_uring",
      passthrough: plan.passthrough,
      backingIds: plan.passthrough ? new BackingIds(fd, undefined, options.onNotice) : undefined,
    });
    let dev: DevTransport;
    try {
      // A page for headers, then the largest write or reply.
      const largest = Math.max(
        options.maxWrite ?? DEFAULT_MAX_WRITE,
        options.maxRead ?? DEFAULT_MAX_WRITE,
      );
      const slotSize = largest + 4096;
      dev = new DevTransport(fd, dispatcher, options.maxInFlight ?? DEFAULT_IN_FLIGHT, slotSize);
    } catch (e) {
      if (helper) {
        fusermountUnmounter.unmountSync(path);
        await helper.release();
      }
      closeFuseDevice(fd);
      throw e;
    }
    const notifier = new Notifier(fd, dispatcher);
    const runtime = new SessionRuntime(
      fs,
      path,
      plan,
      options,
      fd,
      helper,
      dispatcher,
      dev,
      notifier,
    );
    if (!helper) {
      try {
        mountFuse(fd, path, options);
      } catch (e) {
        await dev.close();
        notifier.close();
        closeFuseDevice(fd);
        throw e;
      }
    }
    runtime.connectionNumber = fuseConnectionAt(path);
    return runtime;
  }

  /** Abort this session's own connection: clients get ENOTCONN at once. */
  abort(): void {
    if (this.connectionNumber !== null) abortFuseConnection(this.connectionNumber);
  }

  /** Listen for SIGINT, SIGTERM and SIGHUP, if asked to. */
  handleSignals(): void {
    if (!(this.options.handleSignals ?? true)) return;
    this.#signals = new SessionSignals({
      path: this.path,
      unmounter: this.unmounter,
      abort: () => this.abort(),
      ended: () => this.ended,
    });
  }

  /**
   * Give this thread's /dev/fuse loop a ring of its own: backing calls go
   * through it (so they never block the loop), and queue threads hand
   * requests over on it. Attach before the loop starts, so that its first
   * wait watches the ring too.
   */
  attachDevRing(): void {
    if (this.devRing) return;
    try {
      this.devRing = new Ring({ entries: 256 });
      this.kick = this.dev.attachRing(this.devRing, this.options.backingIo !== "direct");
    } catch (e) {
      this.devIoNote = ` (io_uring unavailable: ${(e as Error).message})`;
    }
  }

  /**
   * Serve /dev/fuse on this thread; resolves with the promise that settles
   * once the session has ended and released everything.
   */
  serve(): Promise<void> {
    this.devRunning = this.dev.run();
    return this.devRunning.catch((e) => {
      console.error(`denofuse: ${this.path}: transport failed:`, e);
      // Requests in flight cannot be answered: fail them, then unmount.
      this.#abortAndDetach();
    }).finally(() => this.close()).then(() => {
      if (this.fatal) throw new Error(this.fatal);
    });
  }

  /** A serving thread died: end the session, so that no client waits for a reply that cannot come. */
  onFatal = (reason: string): void => {
    if (this.fatal) return;
    this.fatal = reason;
    console.error(`denofuse: ${this.path}: ${reason}; aborting the connection`);
    this.#abortAndDetach();
  };

  #abortAndDetach(): void {
    try {
      this.abort();
      this.unmounter.unmountSync(this.path);
    } catch { /* already gone */ }
  }

  /** Wait for the kernel's INIT (at most `initTimeoutMs`): what the connection agreed. */
  async initialized(): Promise<Connection> {
    const timeoutMs = this.options.initTimeoutMs ?? 10000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      return await Promise.race([
        this.dispatcher.initialized,
        this.devRunning.then(() => {
          throw new MountError(`${this.path}: the kernel ended the connection before INIT`);
        }),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () =>
              reject(new MountError(`${this.path}: no INIT from the kernel in ${timeoutMs} ms`)),
            timeoutMs,
          );
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Register the io_uring queues. Returns why io_uring is not serving when
   * the kernel declined it at INIT; throws when it accepted it but the
   * queues could not be registered (then nothing can serve).
   */
  async startUring(connection: Connection, perQueue?: PerQueueFileSystem): Promise<string | null> {
    const o = this.options;
    const queues = new UringQueues(
      this.fd,
      this.dispatcher,
      this.devRing,
      this.kick,
      this.dev.io,
      this.dev.ring,
      {
        queues: possibleCpus(),
        threads: this.devRing ? this.plan.threads : 1,
        queueDepth: this.plan.queueDepth,
        modes: this.plan.modes,
        poolBuffers: o.poolBuffers,
        slotSize: uringSlotSize(connection),
        backingIo: o.backingIo ?? "ring",
        perQueue,
        callingThreadServes: o.callingThreadServes,
        entryTimeout: o.entryTimeout,
        attrTimeout: o.attrTimeout,
        debug: o.debug,
      },
    );
    if ((connection.flags & InitFlag.OVER_IO_URING) === 0n) {
      return "the kernel did not accept FUSE_OVER_IO_URING at INIT";
    }
    this.dev.watchPending(() => queues.holding);
    const why = await queues.start(connection, this.onFatal);
    if (why !== null) {
      // The kernel agreed to io_uring at INIT and now holds every request
      // until the queues are registered: /dev/fuse cannot take over.
      throw new MountError(
        `io_uring queues: ${why} (the kernel, having agreed to FUSE-over-io_uring ` +
          "at INIT, serves nothing until they are registered; mount with -o no_io_uring)",
      );
    }
    this.uring = queues;
    if (PAYLOAD_MODES[queues.mode].zeroCopyOpens) this.dispatcher.zeroCopyOpens = true;
    return null;
  }

  /** More readers of /dev/fuse, each a clone of the fd; null, or why they did not start. */
  async startDevThreads(
    connection: Connection,
    perQueue?: PerQueueFileSystem,
  ): Promise<string | null> {
    const o = this.options;
    const more = new DevThreads({
      threads: this.plan.threads - 1, // this thread's /dev/fuse loop is one
      slots: o.maxInFlight ?? DEFAULT_IN_FLIGHT,
      slotSize: Math.max(connection.maxWrite, connection.maxRead) + 4096,
      backingIo: o.backingIo ?? "ring",
      perQueue,
      entryTimeout: o.entryTimeout,
      attrTimeout: o.attrTimeout,
      debug: o.debug !== undefined,
    });
    this.dev.watchPending(() => more.holding);
    const why = await more.start(
      this.fd,
      this.dispatcher,
      connection,
      this.onFatal,
      this.devRing!,
      o.backingIo !== "direct",
    );
    if (!why) this.devThreads = more;
    return why;
  }

  /** What `-d` says of the session once it serves. */
  describe(fallbackReason: string | null, fds: { soft: number; hard: number }): string[] {
    const { uring, devThreads, dev } = this;
    const slots = this.options.maxInFlight ?? DEFAULT_IN_FLIGHT;
    const lines = [
      `transport: ${uring ? "io_uring" : "dev"}${fallbackReason ? ` (${fallbackReason})` : ""}`,
      `dev: ${slots} slots, ${dev.memory} bytes mapped (touched as used)`,
      `open files: up to ${fds.soft} (hard limit ${fds.hard})`,
    ];
    if (devThreads) {
      const n = devThreads.threads;
      lines.push(`dev: ${n} more thread${n === 1 ? "" : "s"}, each reading a clone of /dev/fuse`);
    }
    lines.push(`backing calls: ${uring ? uring.io.kind : dev.io.kind}${this.devIoNote}`);
    if (!uring) return lines;
    const threads = uring.threads === 1 ? "one thread" : `${uring.threads} queue threads`;
    const spec = PAYLOAD_MODES[uring.mode];
    const pool = spec.bufferPool ? `, pools of ${uring.poolBuffers} buffers` : "";
    lines.push(
      `io_uring: ${uring.mode} mode, ${uring.queues} queues x ${uring.depth} entries x ` +
        `${uring.slotSize} bytes${pool} = ${uring.memory} bytes pinned (${spec.memory}), ` +
        threads + (uring.perQueue ? ", a FileSystem in each" : ""),
    );
    for (const why of uring.passedOver) lines.push(`io_uring: not ${why}`);
    for (const q of uring.perQueueCounters) {
      const where = q.cpus.length ? `on CPU ${q.cpus.join(",")}` : "on the main thread";
      lines.push(`io_uring: queue ${q.qid} served ${where}, ${uring.memory / uring.queues} bytes`);
    }
    return lines;
  }

  /**
   * The ordered close, once this thread's loop has ended: signals, the
   * FileSystem's destroy, the threads (which may still use the device and
   * the entries' memory), this thread's transport, the memory, the rings,
   * the device, and fusermount3.
   */
  async close(): Promise<void> {
    this.ended = true;
    this.#signals?.[Symbol.dispose]();
    try {
      await this.fs.destroy?.();
    } catch (e) {
      console.error("denofuse: destroy failed:", e);
    }
    await this.uring?.stop();
    await this.devThreads?.stop();
    await this.devThreads?.close();
    await this.dev.close();
    await this.uring?.close();
    await this.devRing?.close();
    this.notifier.close();
    closeFuseDevice(this.fd);
    await this.helper?.release();
  }
}

/** The queue threads' code of `perQueue` (bundled from its module), if threads will run it. */
async function resolvePerQueue(
  perQueue: PerQueueFileSystem | PerQueueModule | undefined,
  threads: number,
): Promise<PerQueueFileSystem | undefined> {
  if (!perQueue || !("module" in perQueue)) return perQueue;
  if (threads <= 1) return undefined;
  return { source: await bundleQueueModule(perQueue.module), data: perQueue.data };
}

/**
 * Mount `fs` at `mountpoint` and serve it. Resolves once the kernel's INIT
 * has been answered and the transport is in place, so the mount is usable
 * when the promise settles; rejects with a {@linkcode MountError} that says
 * what to fix otherwise.
 *
 * ```ts
 * const session = await mount(myFs, "/mnt/x");
 * await session.closed; // until unmounted (Ctrl-C unmounts)
 * ```
 */
export async function mount(
  fs: FileSystem,
  mountpoint: string,
  options?: MountOptions,
): Promise<Session> {
  options ??= {};
  const notice = options.onNotice ?? ((m: string) => console.error(`denofuse: ${m}`));
  checkPlanOptions(options); // bad option values fail before anything is touched
  const path = checkMountpoint(mountpoint);
  checkNotMountedTwice(path, options, notice);
  // An author's module becomes code a Worker can run, before anything is mounted.
  const perQueue = await resolvePerQueue(options.perQueue, options.threads ?? possibleCpus());
  const fds = (options.raiseFdLimit ?? true) ? raiseFdLimit() : fdLimit();
  const plan = planTransport(options, await probeMachine(options));
  for (const line of plan.debug) options.debug?.(line);
  for (const line of plan.notices) notice(line);
  const runtime = await SessionRuntime.open(fs, path, plan, { ...options, onNotice: notice });
  runtime.handleSignals();
  // With one io_uring thread, that transport's own ring serves instead.
  const wantsDevRing = plan.transport === "dev" ? options.backingIo !== "direct" : false;
  if (plan.threads > 1 || wantsDevRing) runtime.attachDevRing();
  const closed = runtime.serve();
  try {
    const connection = await runtime.initialized();
    const fallbackReason = await startThreads(runtime, connection, perQueue, notice);
    if (options.debug) {
      for (const line of runtime.describe(fallbackReason, fds)) options.debug(line);
    }
    if (perQueue && (runtime.uring?.perQueue || runtime.devThreads)) {
      // The kernel's answer reaches whichever thread reads it, whose FileSystem asked nothing.
      runtime.notifier.retrieveUnavailable =
        "the FileSystem runs in every serving thread (perQueue)";
    }
    return new Session({ mountpoint: path, connection, runtime, fallbackReason, closed });
  } catch (e) {
    runtime.dev.stop();
    try {
      runtime.unmounter.unmountSync(path);
    } catch { /* nothing mounted */ }
    await closed.catch(() => {});
    throw e instanceof MountError ? e : new MountError(`${path}: ${(e as Error).message}`);
  }
}

/**
 * Phase 5: the io_uring queues when the plan and INIT allow them, else more
 * /dev/fuse readers. Returns why io_uring does not serve (null when it does).
 */
async function startThreads(
  runtime: SessionRuntime,
  connection: Connection,
  perQueue: PerQueueFileSystem | undefined,
  notice: (message: string) => void,
): Promise<string | null> {
  const { plan, options } = runtime;
  const choice = options.transport ?? "auto";
  let fallbackReason = plan.fallbackReason;
  if (plan.transport === "io_uring") {
    fallbackReason = await runtime.startUring(connection, perQueue);
    if (fallbackReason && choice === "io_uring") {
      throw new MountError(`io_uring transport: ${fallbackReason}`);
    }
  }
  if (fallbackReason && choice === "auto") notice(`serving over /dev/fuse: ${fallbackReason}`);
  if (runtime.uring) return null;
  if (options.backingIo !== "direct" || plan.threads > 1) runtime.attachDevRing();
  if (plan.threads > 1 && runtime.devRing) {
    const why = await runtime.startDevThreads(connection, perQueue);
    if (why) notice(`serving /dev/fuse from one thread: ${why}`);
  }
  return fallbackReason;
}
