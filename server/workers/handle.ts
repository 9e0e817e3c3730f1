/**
 * A serving Worker, seen from the session's thread: started from bundled
 * code with a {@linkcode ThreadSetup}, it answers once (ready or
 * refused), says when it has ended, and a crash reaches `onFatal`.
 *
 * @module
 */

import type { QueueThreadMessage, ThreadSetup } from "./messages.ts";

/** One serving Worker. */
export class QueueWorkerHandle {
  /** The Worker. */
  readonly worker: Worker;
  /** Its first answer: ready (with its ring's ids), or refused. */
  readonly answered: Promise<QueueThreadMessage>;
  /** Settles when it has ended (or died). */
  readonly ended: Promise<void>;
  /** Its ring fd and the user_data its ring takes (io_uring threads); -1 until ready or once gone. */
  ringFd = -1;
  /** MSG_RING user_data: commit the entry named by `res`. */
  commitUserData = -1;
  /** MSG_RING user_data: stop serving. */
  stopUserData = -1;
  /** MSG_RING user_data: throw, as a crash would (tests). */
  faultUserData = -1;

  /**
   * Start a Worker from the code at `url` and give it `setup`.
   * @param onFatal called once if it dies while serving
   */
  constructor(
    url: string,
    name: string,
    setup: ThreadSetup,
    onFatal: (reason: string) => void,
  ) {
    this.worker = new Worker(url, { type: "module", name });
    let ended!: () => void;
    this.ended = new Promise<void>((r) => ended = r);
    let first!: (m: QueueThreadMessage) => void;
    this.answered = new Promise<QueueThreadMessage>((r) => first = r);
    this.worker.onmessage = (e: MessageEvent<QueueThreadMessage>) => {
      const m = e.data;
      if (m.type === "ready") {
        this.ringFd = m.ringFd;
        this.commitUserData = m.commitUserData;
        this.stopUserData = m.stopUserData;
        this.faultUserData = m.faultUserData;
      }
      if (m.type === "ended") ended();
      first(m);
    };
    this.worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      const reason = `${name} died: ${e.message}`;
      first({ type: "refused", reason });
      ended();
      this.ringFd = -1;
      onFatal(reason);
    };
    this.worker.postMessage(setup);
  }

  /** Ask a Worker that waits on its event loop (a /dev/fuse thread) to stop. */
  stop(): void {
    this.worker.postMessage({ type: "stop" });
  }

  /** Make a /dev/fuse thread throw, as a crash would (tests). */
  fault(): void {
    this.worker.postMessage({ type: "fault" });
  }
}

/**
 * Wait for every Worker's first answer (at most `ms`); null if all are
 * ready, else the first reason one is not.
 */
export async function allReady(workers: QueueWorkerHandle[], ms: number): Promise<string | null> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<QueueThreadMessage>((resolve) => {
    timer = setTimeout(
      () => resolve({ type: "refused", reason: `no answer from a serving thread in ${ms} ms` }),
      ms,
    );
  });
  const answers = await Promise.all(workers.map((w) => Promise.race([w.answered, timeout])));
  clearTimeout(timer);
  const refused = answers.find((a) => a.type !== "ready");
  if (!refused) return null;
  return refused.type === "refused" ? refused.reason : "a serving thread ended at start";
}

/**
 * End Workers: wait `graceMs` for them to end by themselves (after
 * unmount every entry and read ends), then `askToStop` the rest and wait a
 * second more, then terminate them all.
 */
export async function stopAll(
  workers: QueueWorkerHandle[],
  graceMs: number,
  askToStop: (w: QueueWorkerHandle) => void,
): Promise<void> {
  const all = Promise.all(workers.map((w) => w.ended)).then(() => true);
  const within = async (ms: number) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<boolean>((r) => timer = setTimeout(r, ms, false));
    try {
      return await Promise.race([all, late]);
    } finally {
      clearTimeout(timer); // a pending timer would keep the process alive
    }
  };
  if (!await within(graceMs)) {
    for (const w of workers) askToStop(w);
    await within(1000);
  }
  for (const w of workers) w.worker.terminate();
}

/** A blob URL for bundled Worker code (revoke it once the Workers have started). */
export function workerUrl(source: string): string {
  return URL.createObjectURL(new Blob([source], { type: "application/javascript" }));
}
