/**
 * The entry point of a queue Worker (bundled into `server/gen/`, since a
 * Worker started with `--allow-ffi` alone cannot load module files): it
 * takes its {@linkcode UringQueueSetup}, registers its entries, serves
 * until the session ends, and says so.
 *
 * @module
 */

import { UringQueue, type UringQueueMessage, type UringQueueSetup } from "./uring_queue.ts";

interface WorkerScope {
  onmessage: ((e: MessageEvent<UringQueueSetup>) => void) | null;
  postMessage(message: UringQueueMessage): void;
}

const scope = globalThis as unknown as WorkerScope;

scope.onmessage = async (e) => {
  scope.onmessage = null;
  const queue = new UringQueue(e.data);
  const started = queue.start();
  scope.postMessage(started);
  if (started.type === "ready") queue.serve();
  await queue.close();
  scope.postMessage({ type: "ended" });
};
