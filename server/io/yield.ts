/**
 * How the serving loops wait: yield to the event loop cheaply, let
 * handlers finish their microtasks before blocking, and how long to block
 * on the serving thread itself.
 *
 * A loop that finds nothing to do first gives handlers a few microtask
 * turns ({@linkcode settleHandlers}); while requests are flowing it then waits in
 * the kernel on its own thread for up to {@linkcode BUSY_WAIT_US}, so the
 * next request is delivered without waking another thread; only when idle
 * does it wait on Deno's blocking pool, which costs two more thread
 * switches per wake-up but leaves the event loop free.
 *
 * @module
 */

import { libc } from "../../ffi/libc.ts";

/**
 * The longest a busy serving loop waits on its own thread for the next
 * request; also the longest it holds up timers and signals while waiting.
 */
export const BUSY_WAIT_US = 1000;

/**
 * Microtask turns a handler gets to reach its next ring operation or its
 * reply before the loop blocks (an async method a few awaits deep needs a
 * few turns; each costs a fraction of a microsecond).
 */
export const SETTLE_TURNS = 32;

/**
 * Await microtask turns until `moved()` changes (a handler prepared an SQE
 * or replied) or {@linkcode SETTLE_TURNS} have passed; true if it changed.
 */
export async function settleHandlers(moved: () => number): Promise<boolean> {
  const before = moved();
  for (let i = 0; i < SETTLE_TURNS && moved() === before; i++) await null;
  return moved() !== before;
}

/**
 * A function that runs `fn` once at the end of the current task, however
 * often it is called before then (how prepared SQEs are submitted in one go).
 * What `fn` throws goes to `onError`.
 */
export function coalesced(fn: () => void, onError: (e: unknown) => void): () => void {
  let queued = false;
  return () => {
    if (queued) return;
    queued = true;
    queueMicrotask(() => {
      queued = false;
      // A throw here would reach no caller and end the process.
      try {
        fn();
      } catch (e) {
        onError(e);
      }
    });
  };
}

/**
 * A function that yields to the event loop, and one that frees its channel.
 * A MessageChannel round trip lets timers, signals and I/O callbacks run
 * (about 10 µs here, against ~2 ms for `setTimeout(0)`).
 */
export function makeYield(): [yieldNow: () => Promise<void>, close: () => void] {
  const channel = new MessageChannel();
  let wake: (() => void) | null = null;
  channel.port1.onmessage = () => {
    const w = wake;
    wake = null;
    w?.();
  };
  const yieldNow = () =>
    new Promise<void>((resolve) => {
      wake = resolve;
      channel.port2.postMessage(null);
    });
  const close = () => {
    channel.port1.close();
    channel.port2.close();
  };
  return [yieldNow, close];
}

/** The least time between two {@linkcode trimBeforeSleep} trims on one thread. */
export const TRIM_EVERY_MS = 1000;
let lastTrim = -Infinity;

/**
 * Before a serving loop sleeps with nothing to do: hand the memory freed
 * since the last trim back to the kernel (glibc's `malloc_trim`), at most
 * once a {@linkcode TRIM_EVERY_MS} per thread. Buffers the runtime
 * allocates for JavaScript (typed arrays, FFI and op buffers) are freed by
 * the collector from several threads into glibc's per-thread arenas,
 * which keep them: over a long mixed load that held more than the server
 * itself uses (a 10-minute soak: 100 MiB of 270 MiB resident).
 */
export function trimBeforeSleep(): void {
  const now = performance.now();
  if (now - lastTrim < TRIM_EVERY_MS) return;
  lastTrim = now;
  libc.malloc_trim(0n);
}
