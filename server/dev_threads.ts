/**
 * More threads for the classic transport: Workers that each read requests
 * from a clone of the session's `/dev/fuse` fd (FUSE_DEV_IOC_CLONE), as
 * libfuse's multi-threaded loop does, and answer them with a FileSystem of
 * their own (a per-queue FileSystem, see {@linkcode PerQueueFileSystem}).
 * The session's thread keeps reading the original fd alongside.
 *
 * @module
 */

import type { Connection, Dispatcher } from "../ops/dispatch.ts";
import type { TransportCounters } from "./dev_transport.ts";
import { sharedCounters } from "./dev_transport.ts";
import type { DevThreadSetup } from "./queue_thread.ts";
import { allReady, QueueWorkerHandle, stopAll, workerUrl } from "./queue_worker_handle.ts";
import type { PerQueueFileSystem } from "./uring_queues.ts";

/** Options of the /dev/fuse threads. */
export interface DevThreadsOptions {
  /** Worker threads, each with its own clone of the fd. */
  threads: number;
  /** Requests each keeps in flight at once. */
  slots: number;
  /** Bytes per request slot. */
  slotSize: number;
  /** Backing calls as ring operations or direct calls. */
  backingIo: "ring" | "direct";
  /** The FileSystem every thread runs. */
  perQueue: PerQueueFileSystem;
  /** Cache timeouts for the threads' dispatchers. */
  entryTimeout?: number;
  /** Cache timeouts for the threads' dispatchers. */
  attrTimeout?: number;
  /** Log requests (`-d`). */
  debug: boolean;
}

/** The /dev/fuse Workers of a session. */
export class DevThreads {
  #handles: QueueWorkerHandle[] = [];
  #counters: SharedArrayBuffer;
  #o: DevThreadsOptions;

  /** Threads to be started with {@linkcode start}. */
  constructor(options: DevThreadsOptions) {
    this.#o = options;
    this.#counters = new SharedArrayBuffer(options.threads * 4 * 8);
  }

  /** Number of Worker threads. */
  get threads(): number {
    return this.#handles.length;
  }

  /** Each thread's counters. */
  get counters(): TransportCounters[] {
    return this.#handles.map((_, i) => ({
      ...sharedCounters(new Float64Array(this.#counters, i * 32, 4)),
    }));
  }

  /**
   * Start the threads; null once they all serve, else why not (then none
   * is left running). `onFatal` is called if one dies later.
   */
  async start(
    fuseFd: number,
    dispatcher: Dispatcher,
    connection: Connection,
    onFatal: (reason: string) => void,
  ): Promise<string | null> {
    const url = workerUrl(this.#o.perQueue.source);
    try {
      for (let index = 0; index < this.#o.threads; index++) {
        const setup: DevThreadSetup = {
          kind: "dev",
          fuseFd,
          index,
          slots: this.#o.slots,
          slotSize: this.#o.slotSize,
          backingFds: dispatcher.backingFds.buffer,
          counters: this.#counters,
          backingIo: this.#o.backingIo,
          debug: this.#o.debug,
          connection,
          entryTimeout: this.#o.entryTimeout,
          attrTimeout: this.#o.attrTimeout,
          data: this.#o.perQueue.data,
        };
        this.#handles.push(new QueueWorkerHandle(url, `/dev/fuse thread ${index}`, setup, onFatal));
      }
    } catch (e) {
      await this.stop(0);
      return `cannot start the /dev/fuse threads: ${(e as Error).message}`;
    } finally {
      URL.revokeObjectURL(url);
    }
    const why = await allReady(this.#handles, 10_000);
    if (why) await this.stop(0);
    return why;
  }

  /** Make thread `index` throw, as a crash would (tests of what a dying Worker does). */
  injectFault(index: number): void {
    this.#handles[index].fault();
  }

  /** End every thread (after unmount their reads end by themselves). */
  stop(graceMs = 2000): Promise<void> {
    return stopAll(this.#handles, graceMs, (w) => w.stop());
  }
}
