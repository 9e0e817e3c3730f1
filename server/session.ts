/**
 * A mounted file system: mount, INIT, choose the transport, serve until
 * unmounted, clean up.
 *
 * @module
 */

import { fdLimit, raiseFdLimit } from "../ffi/fd_limit.ts";
import { Notifier } from "./notifier.ts";
import { BackingIds } from "../ops/backing_ids.ts";
import { Dispatcher, type DispatcherOptions } from "../ops/dispatch.ts";
import type { Connection } from "../ops/dispatch.ts";
import type { FileSystem } from "../ops/filesystem.ts";
import { InitFlag } from "../ops/abi.ts";
import { DEFAULT_MAX_WRITE, MAX_PAGES } from "../ops/init.ts";
import { DevTransport, type TransportCounters } from "./dev_transport.ts";
import {
  abortFuseConnection,
  canMount,
  checkMountpoint,
  checkNotMountedTwice,
  closeFuseDevice,
  fuseConnectionAt,
  type KernelMountOptions,
  MountError,
  mountFuse,
  openFuseDevice,
  syscallUnmounter,
  type Unmounter,
} from "./mount.ts";
import { fusermountMount, fusermountUnmounter } from "./fusermount.ts";
import { Ring } from "../ffi/ring.ts";
import { libc } from "../ffi/libc.ts";
import {
  possibleCpus,
  type UringCounters,
  type UringMode,
  uringUnavailable,
} from "./uring_transport.ts";
import { bufferRingMissing } from "./probe.ts";
import {
  type PerQueueFileSystem,
  type PerQueueModule,
  type QueueCounters,
  UringQueues,
} from "./uring_queues.ts";
import { bundleQueueModule } from "./queue_module.ts";
import { DevThreads } from "./dev_threads.ts";
import { DEFAULT_QUEUE_DEPTH, planQueueDepth } from "./locked_memory.ts";

/** Which transport serves requests. */
export type TransportChoice = "auto" | "dev" | "io_uring";

/** Everything {@linkcode mount} accepts. All fields are optional. */
export interface MountOptions extends KernelMountOptions, DispatcherOptions {
  /**
   * `"auto"` (default): FUSE-over-io_uring when the kernel offers it, else
   * /dev/fuse, saying once why. `"io_uring"`: fail if it cannot be had.
   * `"dev"`: /dev/fuse only.
   */
  transport?: TransportChoice;
  /**
   * Ring entries per kernel queue for io_uring (default 8, fewer when the
   * fixed buffers would not fit in RLIMIT_MEMLOCK; one given here that does
   * not fit means /dev/fuse).
   */
  queueDepth?: number;
  /**
   * How io_uring queues take requests (see {@linkcode UringMode}).
   * `"auto"` (default): the best this kernel offers, found by probing, never
   * by version: `zero_copy` (as root), `buf_ring`, then `mainline`, each
   * tried in turn until the kernel accepts one. A mode named here is the
   * only one tried, and the mount fails with the reason if the kernel lacks
   * it. The buffer-ring modes need a kernel with the FUSE buffer-ring
   * series, and a serving thread per queue when `threads` is not 1.
   */
  uringMode?: "auto" | UringMode;
  /**
   * Serving threads, besides this thread's own /dev/fuse loop (default: one
   * per possible CPU). On io_uring, Workers that each serve a kernel queue
   * (one queue per CPU), pinned to its CPU; on /dev/fuse, Workers that each
   * read a clone of the fd. Without a FileSystem of their own (`perQueue`)
   * they serve READ and WRITE of fd-backed handles themselves and hand
   * every other request to `fs` on this thread. `1`: this thread serves
   * alone, with no Worker at all.
   */
  threads?: number;
  /**
   * Run a FileSystem in every queue thread as well (io_uring with more
   * than one thread): bundled code ({@linkcode PerQueueFileSystem}) or a
   * module ({@linkcode PerQueueModule}). Without it, queue
   * threads hand what they do not serve themselves to `fs` on this thread.
   */
  perQueue?: PerQueueFileSystem | PerQueueModule;
  /**
   * How `ctx.io` backing calls and fd data are made. `"ring"` (default):
   * as io_uring operations (on the io_uring transport's ring, or on a ring
   * the /dev/fuse transport reaps), so a call that blocks never holds up
   * other requests; plain calls when io_uring cannot be set up. `"direct"`:
   * system calls on the serving thread, for backing stores where no call
   * can block (tmpfs), since io_uring hands most calls (statx, unlinkat,
   * and any read or write of a tmpfs file) to a worker thread and back.
   */
  backingIo?: "ring" | "direct";
  /**
   * Handle SIGINT, SIGTERM and SIGHUP (default true), as libfuse does: the
   * first unmounts, so that Ctrl-C leaves no mount behind. A second one,
   * while unmounting waits (a client keeps the mount busy, a method does not
   * return), aborts the connection (clients get ENOTCONN at once), detaches
   * the mount and ends the process with 128 + the signal's number if the
   * session has not ended within {@linkcode SIGNAL_EXIT_GRACE_MS}.
   */
  handleSignals?: boolean;
  /**
   * Raise RLIMIT_NOFILE before serving (default true), as passthrough_hp
   * does: the soft limit to the hard one, and both to `fs/nr_open` when the
   * process may (CAP_SYS_RESOURCE). A file system holding an fd per inode
   * needs it for large trees.
   */
  raiseFdLimit?: boolean;
  /** Requests the /dev/fuse transport keeps in flight at once (default 16). */
  maxInFlight?: number;
  /**
   * Mount through `fusermount3` (Debian package `fuse3`), as libfuse does
   * for users who may not call mount(2). Default: only when this process
   * lacks root and CAP_SYS_ADMIN. A user mount gets `nosuid,nodev`, and
   * `allowOther` only where /etc/fuse.conf says `user_allow_other`.
   */
  fusermount?: boolean;
  /**
   * Have `fusermount3` unmount when this process ends, however it ends (a
   * crash, SIGKILL), as libfuse's `auto_unmount` does: it stays behind,
   * watching a socket only this process holds. Mounts through fusermount3.
   * fusermount3 3.14 (Debian 12) unmounts only what it finds answering
   * ENOTCONN to root: a mount served over /dev/fuse (an io_uring one
   * answers ECONNABORTED once its rings are gone) that root may enter
   * (root's own, or `allowOther`).
   */
  autoUnmount?: boolean;
  /** Milliseconds to wait for INIT after mounting (default 10000). */
  initTimeoutMs?: number;
  /** Receives notices such as the reason for a fallback (default: stderr). */
  onNotice?: (message: string) => void;
}

/** Request counts of a session, per transport. */
export interface SessionCounters {
  /**
   * The /dev/fuse transport on the session's thread (INIT, FORGET,
   * INTERRUPT, and everything without io_uring): requests it read, and the
   * replies and fd reads and writes it made, for those handed over by
   * /dev/fuse threads too.
   */
  dev: TransportCounters;
  /** The io_uring transport, when it serves. */
  uring?: UringCounters;
  /** Per kernel queue, when io_uring serves. */
  queues?: QueueCounters[];
  /**
   * Per /dev/fuse Worker (each reading a clone of the fd), when they serve:
   * the requests it read, and the replies and fd reads and writes it made
   * itself (what it hands over is counted in `dev`).
   */
  devThreads?: TransportCounters[];
}

/** How long after unmounting on a signal a session still serving is said to be busy. */
const BUSY_NOTICE_MS = 500;

/** How long a second signal waits for the session to end before exiting the process. */
export const SIGNAL_EXIT_GRACE_MS = 3000;

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
  #dev: DevTransport;
  #uring: UringQueues | null;
  #devThreads: DevThreads | null;
  #unmounter: Unmounter;
  #unmounted = false;
  #backingIds: BackingIds | null;

  /** @internal Use {@linkcode mount}. */
  constructor(
    mountpoint: string,
    connection: Connection,
    dev: DevTransport,
    uring: UringQueues | null,
    devThreads: DevThreads | null,
    fallbackReason: string | null,
    closed: Promise<void>,
    notify: Notifier,
    mountedBy: "mount" | "fusermount3",
    backingIds: BackingIds | null,
  ) {
    this.#backingIds = backingIds;
    this.notify = notify;
    this.mountedBy = mountedBy;
    this.#unmounter = unmounterOf(mountedBy);
    this.#devThreads = devThreads;
    this.mountpoint = mountpoint;
    this.connection = connection;
    this.transport = uring ? "io_uring" : "dev";
    this.uringMode = uring?.mode ?? null;
    this.fallbackReason = fallbackReason;
    this.#dev = dev;
    this.#uring = uring;
    this.closed = closed;
  }

  /** Whether opens of whole backing files go to the kernel (FUSE_PASSTHROUGH was agreed). */
  get kernelPassthrough(): boolean {
    return this.#backingIds?.active ?? false;
  }

  /** Backing files the kernel holds for this session now (one per inode open in passthrough). */
  get backingFiles(): number {
    return this.#backingIds?.held ?? 0;
  }

  /** Request counts per transport, and fixed-buffer read/write counts. */
  get counters(): SessionCounters {
    const uring = this.#uring;
    // The session's thread answers requests read from its own fd and those
    // handed over by the /dev/fuse threads.
    const dev = { ...this.#dev.counters };
    const more = this.#devThreads?.handedOver;
    if (more) {
      dev.replies += more.replies;
      dev.fdReads += more.fdReads;
      dev.fdWrites += more.fdWrites;
    }
    return {
      dev,
      ...(uring ? { uring: uring.counters, queues: uring.perQueueCounters } : {}),
      ...(this.#devThreads ? { devThreads: this.#devThreads.counters } : {}),
    };
  }

  /**
   * Threads serving requests besides the calling thread's /dev/fuse loop:
   * io_uring queue threads, or /dev/fuse threads; 1 when the calling
   * thread serves alone.
   */
  get threads(): number {
    return this.#uring?.threads ?? this.#devThreads?.threads ?? 1;
  }

  /** @internal Make queue thread `index` fail as a crash would (tests only). */
  [Symbol.for("denofuse.injectQueueFault")](index: number): void {
    if (this.#uring) this.#uring.injectFault(index);
    else this.#devThreads?.injectFault(index);
  }

  /** Unmount and wait for the session to end. Safe to call twice. */
  async unmount(): Promise<void> {
    if (!this.#unmounted) {
      this.#unmounted = true;
      await this.#unmounter.unmount(this.mountpoint);
    }
    await this.closed;
  }

  /** `await using session = await mount(...)` unmounts at scope exit. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.unmount();
  }
}

function unmounterOf(mountedBy: "mount" | "fusermount3"): Unmounter {
  return mountedBy === "fusermount3" ? fusermountUnmounter : syscallUnmounter;
}

/** What the pinned entry memory holds, per mode (for `-d`). */
const MODE_MEMORY: Record<UringMode, string> = {
  mainline: "payloads in the fixed-buffer table",
  buf_ring: "headers as a fixed buffer; payloads in kernel-managed buffers, staged here only " +
    "when handed over",
  zero_copy: "headers as a fixed buffer; payloads in kernel-managed buffers or the client's " +
    "pages; staging slots in a memfd",
};

/**
 * The io_uring modes to try, best first, for what was asked: a named mode
 * alone (a MountError if this kernel cannot have it), or for `auto` every
 * mode this kernel has.
 */
function uringModes(asked: "auto" | UringMode): UringMode[] {
  if (asked === "mainline") return ["mainline"];
  if (asked !== "auto" && asked !== "buf_ring" && asked !== "zero_copy") {
    throw new MountError(
      `unknown io_uring mode ${JSON.stringify(asked)}: use auto, mainline, buf_ring or zero_copy`,
    );
  }
  const missing = bufferRingMissing();
  if (asked !== "auto") {
    if (missing) throw new MountError(`io_uring ${asked} mode: ${missing}`);
    return [asked];
  }
  if (missing) return ["mainline"];
  // Zero-copy needs CAP_SYS_ADMIN; without it the kernel refuses and buf_ring is next.
  return libc.geteuid() === 0 ? ["zero_copy", "buf_ring", "mainline"] : ["buf_ring", "mainline"];
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
export function mount(
  fs: FileSystem,
  mountpoint: string,
  options?: MountOptions,
): Promise<Session> {
  return mountWith(fs, mountpoint, options ?? {});
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

/** {@linkcode mount}, with its options given. */
async function mountWith(
  fs: FileSystem,
  mountpoint: string,
  options: MountOptions,
): Promise<Session> {
  const notice = options.onNotice ?? ((m: string) => console.error(`denofuse: ${m}`));
  const debug = options.debug;
  const choice = options.transport ?? "auto";
  if (!["auto", "dev", "io_uring"].includes(choice)) {
    throw new MountError(`unknown transport ${JSON.stringify(choice)}: use auto, dev or io_uring`);
  }
  if (options.backingIo !== undefined && !["ring", "direct"].includes(options.backingIo)) {
    throw new MountError(
      `unknown backingIo ${JSON.stringify(options.backingIo)}: use ring or direct`,
    );
  }
  const path = checkMountpoint(mountpoint);
  checkNotMountedTwice(path, options, notice);
  // An author's module becomes code a Worker can run, before anything is mounted.
  const perQueue = await resolvePerQueue(options.perQueue, options.threads ?? possibleCpus());
  const fds = (options.raiseFdLimit ?? true) ? raiseFdLimit() : fdLimit();
  let fallbackReason: string | null = choice === "dev" ? "the dev transport was asked for" : null;
  if (choice !== "dev") {
    const why = uringUnavailable();
    if (why && choice === "io_uring") throw new MountError(`io_uring transport: ${why}`);
    fallbackReason = why;
  }
  const maxWrite = options.maxWrite ?? DEFAULT_MAX_WRITE;
  const maxRead = options.maxRead ?? DEFAULT_MAX_WRITE;
  // Decided before INIT: once the kernel agrees to io_uring there, it holds
  // every request until the queues are registered.
  let queueDepth = options.queueDepth ?? DEFAULT_QUEUE_DEPTH;
  if (fallbackReason === null) {
    const slot = Math.max(maxWrite, maxRead, MAX_PAGES * 4096);
    const plan = await planQueueDepth(options.queueDepth, possibleCpus(), slot);
    if (typeof plan === "string") {
      if (choice === "io_uring") throw new MountError(`io_uring transport: ${plan}`);
      fallbackReason = plan;
    } else if (plan < queueDepth) {
      debug?.(`io_uring: ${plan} entries per queue, to fit RLIMIT_MEMLOCK`);
      queueDepth = plan;
    }
  }
  const wantUring = fallbackReason === null;
  const modes = wantUring ? uringModes(options.uringMode ?? "auto") : [];
  // fusermount3 mounts first and hands over the fd; mount(2) needs the fd first.
  const mountedBy = (options.fusermount ?? (options.autoUnmount || !canMount()))
    ? "fusermount3"
    : "mount";
  if (options.autoUnmount && mountedBy === "mount") {
    throw new MountError(
      "autoUnmount works through fusermount3: it cannot go with fusermount: false",
    );
  }
  const unmounter = unmounterOf(mountedBy);
  const helper = mountedBy === "fusermount3" ? await fusermountMount(path, options) : null;
  const fd = helper ? helper.fd : openFuseDevice();
  // Kernel passthrough needs CAP_SYS_ADMIN (in the initial namespace) for its ioctls.
  const passthrough = options.passthrough === true && canMount();
  if (options.passthrough && !passthrough) {
    notice(
      "kernel passthrough needs CAP_SYS_ADMIN (root): " +
        "serving file data from the server",
    );
  }
  const dispatcher = new Dispatcher(fs, {
    ...options,
    ioUring: wantUring,
    passthrough,
    backingIds: passthrough ? new BackingIds(fd, undefined, notice) : undefined,
  });
  let dev: DevTransport;
  try {
    // A page for headers, then the largest write or reply, page-aligned.
    const slotSize = Math.max(maxWrite, maxRead) + 4096;
    dev = new DevTransport(fd, dispatcher, options.maxInFlight ?? 16, slotSize);
  } catch (e) {
    if (helper) {
      unmounter.unmountSync(path);
      await helper.release();
    }
    closeFuseDevice(fd);
    throw e;
  }
  const notifier = new Notifier(fd, dispatcher);
  if (mountedBy === "mount") {
    try {
      mountFuse(fd, path, options);
    } catch (e) {
      await dev.close();
      closeFuseDevice(fd);
      throw e;
    }
  }

  // The connection's number, to abort it also once the mount is detached.
  const connectionNumber = fuseConnectionAt(path);
  const abortOwn = () => connectionNumber !== null && abortFuseConnection(connectionNumber);
  const signals: [Deno.Signal, () => void][] = [];
  /** Set once the session has ended (the unmount was not only a detach). */
  let ended = false;
  if (options.handleSignals ?? true) {
    let received = 0;
    for (const [sig, number] of [["SIGINT", 2], ["SIGTERM", 15], ["SIGHUP", 1]] as const) {
      const handler = () => {
        if (++received === 1) {
          // Never on this thread: unmounting may wait for requests it serves.
          unmounter.unmount(path).then(() => {
            // A busy mount is only detached: its connection lives until its users leave.
            const timer = setTimeout(() => {
              if (ended) return;
              console.error(
                `denofuse: ${path} is busy: detached, and served until the processes using it ` +
                  `leave; ${sig} again aborts the connection`,
              );
            }, BUSY_NOTICE_MS);
            Deno.unrefTimer(timer);
          }, (e) => console.error("denofuse: unmount failed:", e));
          return;
        }
        console.error(`denofuse: ${path}: ${sig} again; aborting the connection`);
        abortOwn();
        unmounter.unmount(path).catch(() => {});
        const timer = setTimeout(() => Deno.exit(128 + number), SIGNAL_EXIT_GRACE_MS);
        Deno.unrefTimer(timer);
      };
      Deno.addSignalListener(sig, handler);
      signals.push([sig, handler]);
    }
  }
  let uring: UringQueues | null = null;
  let fatal: string | null = null;
  const threads = options.threads ?? possibleCpus();
  let devThreads: DevThreads | null = null;
  let devRing: Ring | null = null;
  let kick = () => {};
  let devIoNote = "";
  const attachDevRing = () => {
    // The /dev/fuse loop reaps a ring of its own: backing calls go through
    // it (so they never block the loop), and queue threads hand requests
    // over on it.
    try {
      devRing = new Ring({ entries: 256 });
      kick = dev.attachRing(devRing, options.backingIo !== "direct");
    } catch (e) {
      devIoNote = ` (io_uring unavailable: ${(e as Error).message})`;
    }
  };
  // Before the loop starts, so that its first wait watches the ring too.
  // (With one io_uring thread, that transport's own ring serves instead.)
  if (threads > 1 || (!wantUring && options.backingIo !== "direct")) attachDevRing();
  const devRunning = dev.run();
  const closed = devRunning.catch((e) => {
    console.error(`denofuse: ${path}: transport failed:`, e);
    // Requests in flight cannot be answered: fail them, then unmount.
    try {
      abortOwn();
      unmounter.unmountSync(path);
    } catch { /* already gone */ }
  }).finally(async () => {
    ended = true;
    for (const [sig, handler] of signals) Deno.removeSignalListener(sig, handler);
    try {
      await fs.destroy?.();
    } catch (e) {
      console.error("denofuse: destroy failed:", e);
    }
    await (uring as UringQueues | null)?.stop();
    await (devThreads as DevThreads | null)?.stop();
    await (devThreads as DevThreads | null)?.close();
    await dev.close();
    await (uring as UringQueues | null)?.close();
    await (devRing as Ring | null)?.close();
    notifier.close();
    closeFuseDevice(fd);
    await helper?.release();
  }).then(() => {
    if (fatal) throw new Error(fatal);
  });
  // A queue thread that dies takes the session down: abort the connection
  // so that no client waits for a reply that cannot come, then unmount.
  const onFatal = (reason: string) => {
    if (fatal) return;
    fatal = reason;
    console.error(`denofuse: ${path}: ${reason}; aborting the connection`);
    try {
      abortOwn();
      unmounter.unmountSync(path);
    } catch { /* already gone */ }
  };

  const timeoutMs = options.initTimeoutMs ?? 10000;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const connection = await Promise.race([
      dispatcher.initialized,
      devRunning.then(() => {
        throw new MountError(`${path}: the kernel ended the connection before INIT`);
      }),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new MountError(`${path}: no INIT from the kernel in ${timeoutMs} ms`)),
          timeoutMs,
        );
      }),
    ]);
    if (wantUring) {
      const queues = new UringQueues(fd, dispatcher, devRing, kick, dev.io, dev.ring, {
        queues: possibleCpus(),
        threads: devRing ? threads : 1,
        queueDepth,
        modes,
        slotSize: Math.max(connection.maxWrite, connection.maxRead, MAX_PAGES * 4096),
        backingIo: options.backingIo ?? "ring",
        perQueue,
        entryTimeout: options.entryTimeout,
        attrTimeout: options.attrTimeout,
        debug,
      });
      if ((connection.flags & InitFlag.OVER_IO_URING) === 0n) {
        fallbackReason = "the kernel did not accept FUSE_OVER_IO_URING at INIT";
      } else {
        dev.watchPending(() => queues.holding);
        const why = await queues.start(connection, onFatal);
        if (why !== null) {
          // The kernel agreed to io_uring at INIT and now holds every request
          // until the queues are registered: /dev/fuse cannot take over.
          throw new MountError(
            `io_uring queues: ${why} (the kernel, having agreed to FUSE-over-io_uring ` +
              "at INIT, serves nothing until they are registered; mount with -o no_io_uring)",
          );
        }
        uring = queues;
      }
    }
    if (wantUring && !uring && choice === "io_uring") {
      throw new MountError(`io_uring transport: ${fallbackReason}`);
    }
    if (fallbackReason && choice === "auto") notice(`serving over /dev/fuse: ${fallbackReason}`);
    if (!uring && !devRing && (options.backingIo !== "direct" || threads > 1)) attachDevRing();
    if (!uring && threads > 1 && devRing) {
      // More readers of /dev/fuse, each a clone of the fd.
      const more = new DevThreads({
        threads,
        slots: options.maxInFlight ?? 16,
        slotSize: Math.max(connection.maxWrite, connection.maxRead) + 4096,
        backingIo: options.backingIo ?? "ring",
        perQueue,
        entryTimeout: options.entryTimeout,
        attrTimeout: options.attrTimeout,
        debug: debug !== undefined,
      });
      dev.watchPending(() => more.holding);
      const why = await more.start(
        fd,
        dispatcher,
        connection,
        onFatal,
        devRing,
        options.backingIo !== "direct",
      );
      if (why) notice(`serving /dev/fuse from one thread: ${why}`);
      else devThreads = more;
    }
    if (debug) {
      debug(
        `transport: ${uring ? "io_uring" : "dev"}${fallbackReason ? ` (${fallbackReason})` : ""}`,
      );
      debug(`dev: ${options.maxInFlight ?? 16} slots, ${dev.memory} bytes pinned`);
      debug(`open files: up to ${fds.soft} (hard limit ${fds.hard})`);
      if (devThreads) {
        debug(`dev: ${devThreads.threads} more threads, each reading a clone of /dev/fuse`);
      }
      debug(`backing calls: ${uring ? uring.io.kind : dev.io.kind}${devIoNote}`);
      if (uring) {
        const perQueueBytes = uring.memory / uring.queues;
        debug(
          `io_uring: ${uring.mode} mode, ${uring.queues} queues x ${uring.depth} entries x ` +
            `${uring.slotSize} bytes = ${uring.memory} bytes pinned (${
              MODE_MEMORY[uring.mode]
            }), ` +
            (uring.threads === 1 ? "one thread" : `${uring.threads} queue threads`) +
            (uring.perQueue ? ", a FileSystem in each" : ""),
        );
        for (const q of uring.perQueueCounters) {
          const where = q.cpus.length ? `on CPU ${q.cpus.join(",")}` : "on the main thread";
          debug(`io_uring: queue ${q.qid} served ${where}, ${perQueueBytes} bytes`);
        }
      }
    }
    if (perQueue && (uring?.perQueue || (devThreads?.threads ?? 1) > 1)) {
      // The kernel's answer reaches whichever thread reads it, whose FileSystem asked nothing.
      notifier.retrieveUnavailable = "the FileSystem runs in every serving thread (perQueue)";
    }
    return new Session(
      path,
      connection,
      dev,
      uring,
      devThreads,
      fallbackReason,
      closed,
      notifier,
      mountedBy,
      dispatcher.backingIds,
    );
  } catch (e) {
    dev.stop();
    try {
      unmounter.unmountSync(path);
    } catch { /* nothing mounted */ }
    await closed.catch(() => {});
    throw e instanceof MountError ? e : new MountError(`${path}: ${(e as Error).message}`);
  } finally {
    clearTimeout(timer);
  }
}
