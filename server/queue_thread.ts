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

import { pinThread } from "../ffi/libc.ts";
import { BackingFdTable } from "../ops/backing_fds.ts";
import { type Connection, Dispatcher } from "../ops/dispatch.ts";
import type { FileSystem, MaybePromise } from "../ops/filesystem.ts";
import { type EntryAddresses, type HandOver, UringTransport } from "./uring_transport.ts";

/** What a queue thread is given to start. */
export interface QueueThreadSetup {
  /** The session's `/dev/fuse` fd. */
  fuseFd: number;
  /** Kernel queues served. */
  qids: number[];
  /** CPUs to run on (those of `qids`). */
  cpus: number[];
  /** Entries per queue. */
  depth: number;
  /** The entries' memory, held by the session's thread. */
  memory: EntryAddresses;
  /** The session's handle → fd table. */
  backingFds: SharedArrayBuffer;
  /** Counters of every queue. */
  counters: SharedArrayBuffer;
  /** Backing calls as ring operations or direct calls. */
  backingIo: "ring" | "direct";
  /** Where requests go when this thread has no FileSystem. */
  handOver: HandOver;
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
  onmessage: ((e: MessageEvent<QueueThreadSetup>) => void) | null;
  postMessage(message: QueueThreadMessage): void;
}

/**
 * Serve this Worker's queues. With `makeFileSystem`, a FileSystem made from
 * the session's `data` answers every request here; without, READ and WRITE
 * of fd-backed handles are served here and the rest handed over.
 */
export function serveQueueThread(
  makeFileSystem?: (data: unknown) => MaybePromise<FileSystem>,
): void {
  const scope = globalThis as unknown as WorkerScope;
  scope.onmessage = async (e) => {
    scope.onmessage = null;
    const s = e.data;
    let transport: UringTransport | null = null;
    let serving = false;
    try {
      pinThread(s.cpus);
      const backingFds = new BackingFdTable(s.backingFds);
      const log = (line: string) => console.error(line);
      let dispatcher: Dispatcher | undefined;
      if (makeFileSystem) {
        dispatcher = new Dispatcher(await makeFileSystem(s.data), {
          entryTimeout: s.entryTimeout,
          attrTimeout: s.attrTimeout,
          debug: s.debug ? log : undefined,
          backingFds,
        });
        await dispatcher.adopt(s.connection);
      }
      transport = new UringTransport({
        fuseFd: s.fuseFd,
        qids: s.qids,
        depth: s.depth,
        memory: s.memory,
        backingFds,
        dispatcher,
        handOver: s.handOver,
        backingIo: s.backingIo,
        idleWait: "thread",
        counters: new Float64Array(s.counters),
        debug: s.debug ? log : undefined,
      });
      const refused = transport.register();
      if (refused) {
        scope.postMessage({ type: "refused", reason: refused });
      } else {
        scope.postMessage({
          type: "ready",
          ringFd: transport.ringFd,
          commitUserData: transport.commitUserData,
          stopUserData: transport.stopUserData,
          faultUserData: transport.faultUserData,
        });
        serving = true;
        await transport.run();
      }
    } catch (e) {
      if (serving) {
        // Dying while serving: the Worker's error event tells the session,
        // which aborts the connection. Release the ring first.
        await transport?.close();
        throw e;
      }
      scope.postMessage({ type: "refused", reason: (e as Error).message });
    }
    await transport?.close();
    scope.postMessage({ type: "ended" });
  };
}
