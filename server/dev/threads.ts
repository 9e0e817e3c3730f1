/**
 * More threads for the classic transport: Workers that each read requests
 * from a clone of the session's `/dev/fuse` fd (FUSE_DEV_IOC_CLONE), as
 * libfuse's multi-threaded loop does. With a FileSystem in every thread
 * ({@linkcode PerQueueFileSystem}) they answer everything themselves;
 * without, they serve READ and WRITE of fd-backed handles and hand every
 * other request to the session's thread: copied into one of its slots,
 * announced on its ring (MSG_RING), answered there and written back on the
 * clone it came from. The session's thread keeps reading the original fd
 * alongside.
 *
 * @module
 */

import type { Connection, Dispatcher } from "../../ops/dispatch.ts";
import type { TransportCounters } from "./transport.ts";
import { sharedCounters } from "./transport.ts";
import type { DevHandOver, DevThreadSetup } from "./thread.ts";
import { DevTransport } from "./transport.ts";
import type { Ring } from "../../ffi/ring.ts";
import { QUEUE_WORKER_SOURCE } from "../../gen/queue_worker_source.ts";

const ZERO: TransportCounters = { requests: 0, replies: 0, fdReads: 0, fdWrites: 0 };

/** Requests the session's thread takes from the /dev/fuse threads at once. */
const HAND_OVER_SLOTS = 16;
import { allReady, QueueWorkerHandle, stopAll, workerUrl } from "../workers/handle.ts";
import type { PerQueueFileSystem } from "../workers/messages.ts";

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
  /** The FileSystem every thread runs; without, requests are handed over. */
  perQueue?: PerQueueFileSystem;
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
  /** Slots of this thread that take handed-over requests, and their claims. */
  #handOver: { slots: DevTransport; state: Int32Array } | null = null;
  /** Handed-over requests being answered here. */
  #held = 0;

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
  /** Counters of the handed-over requests answered on the session's thread (zeros without). */
  get handedOver(): TransportCounters {
    return { ...(this.#handOver?.slots.counters ?? ZERO) };
  }

  /** Handed-over requests this thread is still answering. */
  get holding(): number {
    return this.#held;
  }

  /**
   * @param ring this thread's ring (reaped by its /dev/fuse loop): requests
   *   are handed over on it
   * @param ringIo backing calls of handed-over requests, or null (direct)
   */
  async start(
    fuseFd: number,
    dispatcher: Dispatcher,
    connection: Connection,
    onFatal: (reason: string) => void,
    ring: Ring,
    backingCalls: boolean,
  ): Promise<string | null> {
    const url = workerUrl(this.#o.perQueue?.source ?? QUEUE_WORKER_SOURCE);
    const handOver = this.#o.perQueue
      ? undefined
      : this.#handOverSlots(fuseFd, dispatcher, ring, backingCalls);
    try {
      for (let index = 0; index < this.#o.threads; index++) {
        const setup: DevThreadSetup = {
          kind: "dev",
          fuseFd,
          index,
          slots: this.#o.slots,
          slotSize: this.#o.slotSize,
          backingFds: dispatcher.backingFds.shared,
          backingIds: dispatcher.backingIds?.shared,
          interrupts: dispatcher.interrupts.buffer,
          counters: this.#counters,
          backingIo: this.#o.backingIo,
          debug: this.#o.debug,
          connection,
          entryTimeout: this.#o.entryTimeout,
          attrTimeout: this.#o.attrTimeout,
          data: this.#o.perQueue?.data,
          handOver,
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

  /**
   * Slots on this thread for requests the threads hand over: each claimed
   * by a thread, answered here by the dispatcher, and freed again.
   */
  #handOverSlots(
    fuseFd: number,
    dispatcher: Dispatcher,
    ring: Ring,
    backingCalls: boolean,
  ): DevHandOver {
    const count = HAND_OVER_SLOTS;
    const slots = new DevTransport(fuseFd, dispatcher, count, this.#o.slotSize);
    slots.attachRing(ring, backingCalls);
    const buffer = new SharedArrayBuffer((1 + count * 3) * 4);
    const state = new Int32Array(buffer);
    slots.whenSlotFree((i) => {
      this.#held--;
      Atomics.store(state, 1 + i * 3, 0);
      Atomics.add(state, 0, 1);
      Atomics.notify(state, 0);
    });
    const userData = ring.register((i) => {
      this.#held++;
      slots.serveCopied(i, state[2 + i * 3], state[3 + i * 3]);
    });
    this.#handOver = { slots, state };
    const areas = Array.from({ length: count }, (_, i) => slots.slotArea(i));
    return {
      ringFd: ring.fd,
      userData,
      areas: areas.map((a) => a.address),
      room: areas[0].size,
      state: buffer,
    };
  }

  /** End every thread (after unmount their reads end by themselves). */
  stop(graceMs = 2000): Promise<void> {
    return stopAll(this.#handles, graceMs, (w) => w.stop());
  }

  /** Free the hand-over slots (after {@linkcode stop}), unless a method still holds one. */
  async close(): Promise<void> {
    if (this.#handOver && this.#held === 0) await this.#handOver.slots.close(0);
  }
}
