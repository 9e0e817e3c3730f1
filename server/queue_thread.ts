/**
 * A queue thread: the code a queue Worker runs. It serves its kernel
 * queues with a {@linkcode UringTransport} of its own, pinned to their CPUs,
 * waiting in the kernel on its own thread.
 *
 * A Worker started under `--allow-ffi` alone cannot load module files, so
 * this code reaches it as one self-contained bundle (`deno bundle`): the
 * library's own (`server/queue_worker.ts`, when the FileSystem stays on the
 * session's thread), or an author's module that calls
 * {@linkcode serveQueueThread} with a factory, which puts a FileSystem in
 * every queue thread.
 *
 * @module
 */

import { InterruptBoard } from "../ops/interrupts.ts";
import { pinThread } from "../ffi/libc.ts";
import { prepMsgRing, Ring } from "../ffi/ring.ts";
import { DevTransport } from "./dev_transport.ts";
import { cloneFuseDevice, closeFuseDevice } from "./mount.ts";
import { type BackingFdShared, BackingFdTable } from "../ops/backing_fds.ts";
import { BackingIds, type BackingIdsShared } from "../ops/backing_ids.ts";
import { type Connection, Dispatcher } from "../ops/dispatch.ts";
import type { FileSystem, MaybePromise } from "../ops/filesystem.ts";
import {
  type EntryAddresses,
  type HandOver,
  type UringMode,
  UringTransport,
} from "./uring_transport.ts";

/** What every serving thread is given to start. */
interface ThreadSetup {
  /** The session's `/dev/fuse` fd. */
  fuseFd: number;
  /** The session's handle → fd table. */
  backingFds: BackingFdShared;
  /** The session's {@linkcode InterruptBoard}. */
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

/** A thread serving io_uring queues. */
export interface UringThreadSetup extends ThreadSetup {
  /** Which transport. */
  kind: "io_uring";
  /** Kernel queues served. */
  qids: number[];
  /** CPUs to run on (those of `qids`). */
  cpus: number[];
  /** Entries per queue. */
  depth: number;
  /** How the queues take their requests. */
  mode: UringMode;
  /** The entries' memory, held by the session's thread. */
  memory: EntryAddresses;
  /** Where requests go when this thread has no FileSystem. */
  handOver: HandOver;
}

/**
 * Where a /dev/fuse thread without a FileSystem puts the requests it does
 * not answer: slots of the session's thread, claimed through `state`
 * (Int32: a sequence bumped on every release, then per slot: claimed,
 * length, reply fd), announced with a MSG_RING on the session's ring.
 */
export interface DevHandOver {
  /** The session thread's ring. */
  ringFd: number;
  /** user_data of a handed-over request there; `res` is the slot. */
  userData: number;
  /** Where each slot takes a request. */
  areas: bigint[];
  /** Bytes each can take. */
  room: number;
  /** Claims, lengths and reply fds. */
  state: SharedArrayBuffer;
}

/** A thread reading requests from a clone of the session's `/dev/fuse` fd. */
export interface DevThreadSetup extends ThreadSetup {
  /** Which transport. */
  kind: "dev";
  /** Requests in flight at once. */
  slots: number;
  /** Bytes per request slot. */
  slotSize: number;
  /** This thread's index (its counters are the index-th four). */
  index: number;
  /** Without a FileSystem in this thread: where other requests go. */
  handOver?: DevHandOver;
}

/** What a serving thread is given to start. */
export type QueueThreadSetup = UringThreadSetup | DevThreadSetup;

/** What a queue thread says to the session's thread. */
export type QueueThreadMessage =
  | {
    type: "ready";
    ringFd: number;
    commitUserData: number;
    stopUserData: number;
    faultUserData: number;
  }
  | { type: "refused"; reason: string }
  | { type: "ended" };

interface WorkerScope {
  onmessage: ((e: MessageEvent<QueueThreadSetup | { type: "stop" | "fault" }>) => void) | null;
  postMessage(message: QueueThreadMessage): void;
}

/**
 * Makes the FileSystem of a serving thread from what the session passed
 * (`PerQueueFileSystem.data`: shared memory, settings).
 */
export type FileSystemFactory = (data: unknown) => MaybePromise<FileSystem>;

/** A dispatcher in this thread for `fs`, on the session's connection. */
async function localDispatcher(
  fs: FileSystem,
  s: QueueThreadSetup,
  backingFds: BackingFdTable,
): Promise<Dispatcher> {
  const dispatcher = new Dispatcher(fs, {
    entryTimeout: s.entryTimeout,
    attrTimeout: s.attrTimeout,
    debug: s.debug ? (line) => console.error(line) : undefined,
    backingFds,
    interrupts: new InterruptBoard(s.interrupts),
    backingIds: s.backingIds
      ? new BackingIds(s.fuseFd, s.backingIds, (why) => console.error(`denofuse: ${why}`))
      : undefined,
  });
  await dispatcher.adopt(s.connection);
  return dispatcher;
}

/**
 * Serve this Worker's share of the session. On io_uring: its kernel queues;
 * with `makeFileSystem`, a FileSystem made from the session's `data`
 * answers every request here, and without one, READ and WRITE of fd-backed
 * handles are served here and the rest handed over. On /dev/fuse: requests
 * read from a clone of the session's fd, answered the same way (handed
 * over by copying them into slots of the session's thread).
 */
export function serveQueueThread(makeFileSystem?: FileSystemFactory): void {
  const scope = globalThis as unknown as WorkerScope;
  scope.onmessage = async (e) => {
    const s = e.data as QueueThreadSetup;
    scope.onmessage = null;
    let serving = false;
    let release = async () => {};
    try {
      const backingFds = new BackingFdTable(s.backingFds);
      let serve: () => Promise<void>;
      if (s.kind === "dev") {
        // Without a FileSystem here, a dispatcher over none still serves
        // READ and WRITE of fd-backed handles; the rest is handed over.
        const fs = makeFileSystem ? await makeFileSystem(s.data) : {};
        [serve, release] = devThread(s, await localDispatcher(fs, s, backingFds));
        scope.onmessage = (m) => {
          if ((m.data as { type?: string }).type === "fault") {
            throw new Error("fault injected into a /dev/fuse thread");
          }
          release(); // asked to stop
        };
        scope.postMessage({
          type: "ready",
          ringFd: -1,
          commitUserData: -1,
          stopUserData: -1,
          faultUserData: -1,
        });
      } else {
        pinThread(s.cpus);
        const dispatcher = makeFileSystem
          ? await localDispatcher(await makeFileSystem(s.data), s, backingFds)
          : undefined;
        const transport = new UringTransport({
          fuseFd: s.fuseFd,
          qids: s.qids,
          depth: s.depth,
          mode: s.mode,
          memory: s.memory,
          backingFds,
          dispatcher,
          handOver: s.handOver,
          backingIo: s.backingIo,
          idleWait: "thread",
          counters: new Float64Array(s.counters),
          debug: s.debug ? (line) => console.error(line) : undefined,
        });
        release = async () => {
          await transport.close();
        };
        const refused = transport.register();
        if (refused) throw new Error(refused);
        scope.postMessage({
          type: "ready",
          ringFd: transport.ringFd,
          commitUserData: transport.commitUserData,
          stopUserData: transport.stopUserData,
          faultUserData: transport.faultUserData,
        });
        serve = () => transport.run();
      }
      serving = true;
      await serve();
    } catch (e) {
      if (serving) {
        // Dying while serving: the Worker's error event tells the session,
        // which aborts the connection. Release what this thread holds first.
        await release();
        throw e;
      }
      scope.postMessage({ type: "refused", reason: (e as Error).message });
    }
    await release();
    scope.postMessage({ type: "ended" });
  };
}

/**
 * A /dev/fuse serving thread: a clone of the session's fd, read by a
 * {@linkcode DevTransport} of its own. Returns how to serve and how to
 * stop and release it.
 */
function devThread(
  s: DevThreadSetup,
  dispatcher: Dispatcher,
): [() => Promise<void>, () => Promise<void>] {
  const fd = cloneFuseDevice(s.fuseFd);
  const counters = new Float64Array(s.counters, s.index * 4 * 8, 4);
  let dev: DevTransport;
  let ring: Ring | null = null;
  try {
    dev = new DevTransport(fd, dispatcher, s.slots, s.slotSize, counters);
    if (s.backingIo === "ring" || s.handOver) {
      ring = new Ring({ entries: 64 });
      dev.attachRing(ring, s.backingIo === "ring");
    }
    if (s.handOver) dev.handOverTo(handOver(s.handOver, ring!, fd));
  } catch (e) {
    closeFuseDevice(fd);
    throw e;
  }
  let released = false;
  const release = async () => {
    dev.stop();
    if (released) return;
    released = true;
    await dev.close();
    await ring?.close();
    closeFuseDevice(fd);
  };
  return [() => dev.run(), release];
}

/**
 * Copy a request into a free slot of the session's thread and tell it on
 * its ring; with every slot taken, wait (this thread has nothing else to
 * do) until one is released.
 */
function handOver(h: DevHandOver, ring: Ring, replyFd: number): (request: Uint8Array) => void {
  const state = new Int32Array(h.state);
  const areas = h.areas.map((a) =>
    new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(Deno.UnsafePointer.create(a)!, h.room))
  );
  return (request) => {
    for (;;) {
      const seq = Atomics.load(state, 0);
      for (let i = 0; i < areas.length; i++) {
        if (Atomics.compareExchange(state, 1 + i * 3, 0, 1) !== 0) continue;
        areas[i].set(request);
        state[2 + i * 3] = request.length;
        state[3 + i * 3] = replyFd;
        prepMsgRing(ring.sqes, ring.sqe(), h.ringFd, i, h.userData);
        ring.submit();
        return;
      }
      Atomics.wait(state, 0, seq, 50);
    }
  };
}
