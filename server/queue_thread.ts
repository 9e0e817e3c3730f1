/**
 * A serving thread: the code a serving Worker runs. It takes its setup from
 * the session's thread, makes a dispatcher when a FileSystem lives here,
 * and serves its share of the session with the transport the setup names
 * (`uring/thread.ts`: its kernel queues; `dev/thread.ts`: a clone of the
 * session's `/dev/fuse` fd).
 *
 * A Worker started under `--allow-ffi` alone cannot load module files, so
 * this code reaches it as one self-contained bundle (`deno task bundle`,
 * into `gen/`): the library's own (`server/queue_worker.ts`, when the
 * FileSystem stays on the session's thread), or an author's module that
 * calls {@linkcode serveQueueThread} with a factory, which puts a
 * FileSystem in every serving thread.
 *
 * @module
 */

import { BackingFdTable } from "../ops/backing_fds.ts";
import { BackingIds } from "../ops/backing_ids.ts";
import { Dispatcher } from "../ops/dispatch.ts";
import type { FileSystem } from "../ops/filesystem.ts";
import { InterruptBoard } from "../ops/interrupts.ts";
import { type DevThreadSetup, startDevThread } from "./dev/thread.ts";
import { startUringThread, type UringThreadSetup } from "./uring/thread.ts";
import type {
  FileSystemFactory,
  QueueThreadControl,
  QueueThreadMessage,
  ServingThread,
} from "./workers/messages.ts";
import { installStackMap, messageAndPlace } from "./workers/stack_map.ts";

export type { FileSystemFactory } from "./workers/messages.ts";

/** What a serving thread is given to start. */
export type QueueThreadSetup = UringThreadSetup | DevThreadSetup;

interface WorkerScope {
  onmessage: ((e: MessageEvent<QueueThreadSetup | QueueThreadControl>) => void) | null;
  postMessage(message: QueueThreadMessage): void;
}

/** `-d` in a serving thread: each request's line says which thread served it. */
function threadDebug(s: QueueThreadSetup): ((line: string) => void) | undefined {
  if (!s.debug) return undefined;
  const where = s.kind === "io_uring" ? `queue ${s.qids.join(",")}` : `/dev/fuse thread ${s.index}`;
  return (line) => console.error(line.startsWith("unique:") ? `${line}, on ${where}` : line);
}

/** A dispatcher in this thread for `fs`, on the session's connection. */
async function localDispatcher(
  fs: FileSystem,
  s: QueueThreadSetup,
  backingFds: BackingFdTable,
): Promise<Dispatcher> {
  const dispatcher = new Dispatcher(fs, {
    entryTimeout: s.entryTimeout,
    attrTimeout: s.attrTimeout,
    debug: threadDebug(s),
    backingFds,
    interrupts: new InterruptBoard(s.interrupts),
    backingIds: s.backingIds
      ? new BackingIds(s.fuseFd, s.backingIds, (why) => console.error(`denofuse: ${why}`))
      : undefined,
  });
  await dispatcher.adopt(s.connection);
  return dispatcher;
}

/** This thread's transport, with a dispatcher here when it has a FileSystem. */
async function start(
  s: QueueThreadSetup,
  makeFileSystem: FileSystemFactory | undefined,
): Promise<ServingThread> {
  // Without a FileSystem here, a dispatcher over none still serves READ
  // and WRITE of fd-backed handles; the rest is handed over.
  const fs = makeFileSystem ? await makeFileSystem(s.data) : {};
  const dispatcher = await localDispatcher(fs, s, new BackingFdTable(s.backingFds));
  if (s.kind === "dev") return startDevThread(s, dispatcher);
  return await startUringThread(s, dispatcher, makeFileSystem !== undefined);
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
  installStackMap();
  const scope = globalThis as unknown as WorkerScope;
  scope.onmessage = async (e) => {
    const s = e.data as QueueThreadSetup;
    scope.onmessage = null;
    let thread: ServingThread;
    try {
      thread = await start(s, makeFileSystem);
    } catch (e) {
      scope.postMessage({ type: "refused", reason: messageAndPlace(e) });
      return;
    }
    const control = thread.control;
    if (control) scope.onmessage = (m) => control(m.data as QueueThreadControl);
    scope.postMessage({ type: "ready", ...thread.ready });
    try {
      await thread.serve();
    } catch (e) {
      // Dying while serving: the Worker's error event tells the session,
      // which aborts the connection. Release what this thread holds first.
      await thread.release();
      throw e;
    }
    await thread.release();
    scope.postMessage({ type: "ended" });
  };
}
