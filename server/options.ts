/**
 * What `mount` accepts, and the counters a session keeps.
 *
 * @module
 */

import type { DispatcherOptions } from "../ops/dispatch.ts";
import type { TransportCounters } from "./dev/transport.ts";
import type { KernelMountOptions } from "./mount/mount.ts";
import type { TransportChoice } from "./plan.ts";
import type { QueueCounters } from "./uring/queues.ts";
import type { UringCounters } from "./uring/counters.ts";
import type { UringMode } from "./uring/modes/mode.ts";
import type { PerQueueFileSystem, PerQueueModule } from "./workers/messages.ts";

/** Everything `mount` accepts. All fields are optional. */
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
   * `"auto"` (default): the best this kernel and process allow, found from
   * what the kernel says, never from its version: `bufpool_zero_copy` (as
   * root) and `bufpool` where INIT offers FUSE_HAS_IO_URING_BUFPOOL (Linux
   * 7.3+), `zero_copy` (as root) and `buf_ring` where the seeds' buffer
   * rings are, then `mainline`; `-d` says which and why not the better
   * ones. A mode named here is the only one tried, and the mount fails
   * before mounting with the reason if the kernel or process lacks it. The
   * seeds' modes need a serving thread per queue when `threads` is not 1.
   */
  uringMode?: "auto" | UringMode;
  /**
   * Payload buffers in each queue's pool in the buffer-pool modes (default:
   * the queue depth, so no request waits for a buffer). Fewer pins less
   * memory: only requests that carry a payload take a buffer, and only
   * while the server holds them (a zero-copy READ takes none).
   */
  poolBuffers?: number;
  /**
   * Threads that take requests from the kernel, this one among them
   * (default: one per possible CPU). On io_uring each serves its kernel
   * queues (one queue per CPU), pinned to their CPUs: with a FileSystem in
   * every thread (`perQueue`) this thread serves the first and a Worker
   * each of the others; without, Workers serve them all. On /dev/fuse,
   * this thread's loop and `threads - 1` Workers that each read a clone of
   * the fd. Workers without a FileSystem of their own serve READ and WRITE
   * of fd-backed handles themselves and hand every other request to `fs`
   * on this thread. `1`: this thread serves alone, with no Worker at all.
   */
  threads?: number;
  /**
   * On io_uring with a FileSystem in every thread (`perQueue`), let this
   * thread serve the first queue group itself, pinned to its CPUs, instead
   * of a Worker: one isolate (about 13 MiB) less. Only for a process that
   * does nothing else on this thread: a synchronous call into the mount
   * from it (a `close`, a `readTextFileSync`) would wait for itself. The
   * command line (`runMain`) sets it; default false.
   */
  callingThreadServes?: boolean;
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
   * session has not ended within `SIGNAL_EXIT_GRACE_MS`.
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
