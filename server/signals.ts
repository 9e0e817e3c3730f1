/**
 * SIGINT, SIGTERM and SIGHUP for a session, as libfuse handles them: the
 * first unmounts (so Ctrl-C leaves no mount behind); a second, while
 * unmounting waits on a busy mount or a method that does not return,
 * aborts the connection and ends the process.
 *
 * @module
 */

import type { Unmounter } from "./mount/mount.ts";

/** How long after unmounting on a signal a session still serving is said to be busy. */
const BUSY_NOTICE_MS = 500;

/** How long a second signal waits for the session to end before exiting the process. */
export const SIGNAL_EXIT_GRACE_MS = 3000;

const SIGNALS = [["SIGINT", 2], ["SIGTERM", 15], ["SIGHUP", 1]] as const;

/** What a signal does to one session. */
export interface SignalTarget {
  /** The mountpoint. */
  path: string;
  /** How it is unmounted. */
  unmounter: Unmounter;
  /** Abort the session's own connection (clients get ENOTCONN at once). */
  abort(): void;
  /** Whether the session has ended. */
  ended(): boolean;
}

/** The signal listeners of one session; `using` them removes them. */
export class SessionSignals implements Disposable {
  #listeners: [Deno.Signal, () => void][] = [];
  #received = 0;

  /** Listen for the three signals on behalf of `target`. */
  constructor(readonly target: SignalTarget) {
    for (const [sig, number] of SIGNALS) {
      const handler = () => this.#received++ === 0 ? this.#first(sig) : this.#again(sig, number);
      Deno.addSignalListener(sig, handler);
      this.#listeners.push([sig, handler]);
    }
  }

  /** Unmount: never on the serving thread, since unmounting may wait for requests it serves. */
  #first(sig: Deno.Signal): void {
    const { path, unmounter, ended } = this.target;
    unmounter.unmount(path).then(() => {
      // A busy mount is only detached: its connection lives until its users leave.
      const timer = setTimeout(() => {
        if (ended()) return;
        console.error(
          `denofuse: ${path} is busy: detached, and served until the processes using it ` +
            `leave; ${sig} again aborts the connection`,
        );
      }, BUSY_NOTICE_MS);
      Deno.unrefTimer(timer);
    }, (e) => console.error("denofuse: unmount failed:", e));
  }

  /** Abort the connection, detach the mount, and exit if the session has not ended soon. */
  #again(sig: Deno.Signal, number: number): void {
    const { path, unmounter } = this.target;
    console.error(`denofuse: ${path}: ${sig} again; aborting the connection`);
    this.target.abort();
    unmounter.unmount(path).catch(() => {});
    const timer = setTimeout(() => Deno.exit(128 + number), SIGNAL_EXIT_GRACE_MS);
    Deno.unrefTimer(timer);
  }

  /** Stop listening. */
  [Symbol.dispose](): void {
    for (const [sig, handler] of this.#listeners) Deno.removeSignalListener(sig, handler);
    this.#listeners = [];
  }
}
