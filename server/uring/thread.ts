/**
 * An io_uring serving thread, inside its Worker: a {@linkcode UringTransport}
 * of its own over its kernel queues, pinned to their CPUs and waiting in
 * the kernel on this thread.
 *
 * @module
 */

import { pinThread } from "../../ffi/libc.ts";
import type { Dispatcher } from "../../ops/dispatch.ts";
import type { ServingThread, ThreadSetup } from "../workers/messages.ts";
import type { EntryAddresses } from "./entry_memory.ts";
import type { UringMode } from "./modes/mode.ts";
import { PAYLOAD_MODES } from "./modes/modes.ts";
import { type HandOver, UringTransport } from "./transport.ts";

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
 * Set up this thread's ring and register its entries with the kernel;
 * throws if the kernel refuses them. With `ownFileSystem` false (the
 * dispatcher has none), only READ and WRITE of fd-backed handles are
 * dispatched here, and the rest is handed over.
 */
export async function startUringThread(
  s: UringThreadSetup,
  dispatcher: Dispatcher,
  ownFileSystem: boolean,
): Promise<ServingThread> {
  pinThread(s.cpus);
  if (PAYLOAD_MODES[s.mode].zeroCopyOpens) dispatcher.zeroCopyOpens = true;
  const transport = new UringTransport({
    fuseFd: s.fuseFd,
    qids: s.qids,
    depth: s.depth,
    mode: s.mode,
    memory: s.memory,
    dispatcher,
    handOver: ownFileSystem ? undefined : s.handOver,
    backingIo: s.backingIo,
    idleWait: "thread",
    counters: new Float64Array(s.counters),
  });
  const release = async () => {
    await transport.close();
  };
  const refused = transport.register();
  if (refused) {
    await release();
    throw new Error(refused);
  }
  return {
    ready: {
      ringFd: transport.ringFd,
      commitUserData: transport.commitUserData,
      stopUserData: transport.stopUserData,
      faultUserData: transport.faultUserData,
    },
    serve: () => transport.run(),
    release,
  };
}
