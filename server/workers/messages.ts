/**
 * What the session's thread and a serving Worker say to each other, and
 * what an author gives to put a FileSystem in every serving thread. Shared
 * by both transports; the transport-specific part of a setup lives with
 * its transport (`dev/thread.ts`, `uring/thread.ts`).
 *
 * @module
 */

import type { BackingFdShared } from "../../ops/backing_fds.ts";
import type { BackingIdsShared } from "../../ops/backing_ids.ts";
import type { Connection } from "../../ops/dispatch.ts";
import type { FileSystem, MaybePromise } from "../../ops/filesystem.ts";

/** What every serving thread is given to start. */
export interface ThreadSetup {
  /** Which transport the thread serves. */
  kind: "dev" | "io_uring";
  /** The session's `/dev/fuse` fd. */
  fuseFd: number;
  /** The session's handle → fd table. */
  backingFds: BackingFdShared;
  /** The session's `InterruptBoard`. */
  interrupts: SharedArrayBuffer;
  /** The session's backing ids, when the connection has kernel passthrough. */
  backingIds?: BackingIdsShared;
  /** Counters, shared with the session's thread. */
  counters: SharedArrayBuffer;
  /** Backing calls as ring operations or direct calls. */
  backingIo: "ring" | "direct";
  /** Log requests (`-d`). */
  debug: boolean;
  /** The connection agreed at INIT (for a FileSystem in this thread). */
  connection: Connection;
  /** Cache timeouts, as the session's dispatcher has them. */
  entryTimeout?: number;
  /** Cache timeouts, as the session's dispatcher has them. */
  attrTimeout?: number;
  /** What the session passes to the factory of a FileSystem in this thread. */
  data?: unknown;
}

/** The ring ids a ready thread takes MSG_RINGs on (all -1 for a /dev/fuse thread). */
export interface ReadyRing {
  /** The thread's ring fd. */
  ringFd: number;
  /** MSG_RING user_data: commit the entry named by `res`. */
  commitUserData: number;
  /** MSG_RING user_data: stop serving. */
  stopUserData: number;
  /** MSG_RING user_data: throw, as a crash would (tests). */
  faultUserData: number;
}

/** What a serving thread says to the session's thread. */
export type QueueThreadMessage =
  | ({ type: "ready" } & ReadyRing)
  | { type: "refused"; reason: string }
  | { type: "ended" };

/** What the session's thread says to a serving thread after its setup. */
export type QueueThreadControl = { type: "stop" | "fault" };

/** A serving thread's transport, set up and ready to run. */
export interface ServingThread {
  /** What the session's thread is told once it is ready. */
  ready: ReadyRing;
  /** Serve until unmounted or stopped. */
  serve(): Promise<void>;
  /** Release what the thread holds (safe to call twice). */
  release(): Promise<void>;
  /** Handle a control message (a /dev/fuse thread waits on its event loop for them). */
  control?(message: QueueThreadControl): void;
}

/**
 * Makes the FileSystem of a serving thread from what the session passed
 * (`PerQueueFileSystem.data`: shared memory, settings).
 */
export type FileSystemFactory = (data: unknown) => MaybePromise<FileSystem>;

/**
 * A FileSystem that runs in every queue thread: `source` is self-contained
 * JavaScript (made with `deno bundle`) that calls `serveQueueThread(make)`;
 * `data` (structured-cloned; SharedArrayBuffers are shared) is what `make`
 * receives. The FileSystem given to `mount` still answers what arrives on
 * the session's thread (INIT, FORGET, INTERRUPT, requests before the rings
 * are up), so all instances must share their state.
 */
export interface PerQueueFileSystem {
  /** The bundled queue-thread code. */
  source: string;
  /** Passed to the factory in every queue thread. */
  data?: unknown;
}

/**
 * A FileSystem that runs in every serving thread, from a module of its
 * author's: `module` (a `file:` URL, e.g. `import.meta.resolve("./my_queue.ts")`,
 * or an absolute path) calls `serveQueueThread(make)`; the session bundles
 * it with `deno bundle` before mounting (a child process started with
 * posix_spawnp: the server still needs only `--allow-ffi`) and runs it as
 * {@linkcode PerQueueFileSystem.source}. `data` is as there.
 */
export interface PerQueueModule {
  /** The module whose code runs in every serving thread. */
  module: string | URL;
  /** Passed to the factory in every serving thread. */
  data?: unknown;
}
