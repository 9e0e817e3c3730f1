/**
 * A mounted file system: mount, INIT, serve until unmounted, clean up.
 *
 * @module
 */

import { Dispatcher, type DispatcherOptions } from "../ops/dispatch.ts";
import type { Connection } from "../ops/dispatch.ts";
import type { FileSystem } from "../ops/filesystem.ts";
import { DEFAULT_MAX_WRITE } from "../ops/init.ts";
import { DevTransport, type TransportCounters } from "./dev_transport.ts";
import {
  checkMountpoint,
  closeFuseDevice,
  type KernelMountOptions,
  MountError,
  mountFuse,
  openFuseDevice,
  unmountFuse,
} from "./mount.ts";

/** Everything {@linkcode mount} accepts. All fields are optional. */
export interface MountOptions extends KernelMountOptions, DispatcherOptions {
  /**
   * Unmount on SIGINT and SIGTERM (default true), so that Ctrl-C leaves no
   * mount behind.
   */
  handleSignals?: boolean;
  /** Requests the /dev/fuse transport keeps in flight at once (default 16). */
  maxInFlight?: number;
  /** Milliseconds to wait for INIT after mounting (default 10000). */
  initTimeoutMs?: number;
}

/** A mounted, running file system. */
export class Session {
  /** The absolute mountpoint. */
  readonly mountpoint: string;
  /** The transport serving requests: `"dev"` (classic /dev/fuse). */
  readonly transport: string;
  /** What was agreed at INIT. */
  readonly connection: Connection;
  /** Settles when the session has ended and its resources are released. */
  readonly closed: Promise<void>;
  #dev: DevTransport;
  #unmounted = false;

  /** @internal Use {@linkcode mount}. */
  constructor(
    mountpoint: string,
    connection: Connection,
    dev: DevTransport,
    closed: Promise<void>,
  ) {
    this.mountpoint = mountpoint;
    this.connection = connection;
    this.transport = "dev";
    this.#dev = dev;
    this.closed = closed;
  }

  /** Request and reply counts per transport. */
  get counters(): { dev: TransportCounters } {
    return { dev: { ...this.#dev.counters } };
  }

  /** Unmount and wait for the session to end. Safe to call twice. */
  async unmount(): Promise<void> {
    if (!this.#unmounted) {
      this.#unmounted = true;
      unmountFuse(this.mountpoint);
    }
    await this.closed;
  }

  /** `await using session = await mount(...)` unmounts at scope exit. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.unmount();
  }
}

/**
 * Mount `fs` at `mountpoint` and serve it. Resolves once the kernel's INIT
 * has been answered, so the mount is usable when the promise settles;
 * rejects with a {@linkcode MountError} that says what to fix otherwise.
 *
 * ```ts
 * const session = await mount(myFs, "/mnt/x");
 * await session.closed; // until unmounted (Ctrl-C unmounts)
 * ```
 */
export async function mount(
  fs: FileSystem,
  mountpoint: string,
  options: MountOptions = {},
): Promise<Session> {
  const path = checkMountpoint(mountpoint);
  const maxWrite = options.maxWrite ?? DEFAULT_MAX_WRITE;
  const maxRead = options.maxRead ?? DEFAULT_MAX_WRITE;
  const dispatcher = new Dispatcher(fs, options);
  const fd = openFuseDevice();
  let dev: DevTransport;
  try {
    // Room for the largest write plus its headers, or the largest reply.
    const slotSize = Math.max(maxWrite, maxRead) + 4096;
    dev = new DevTransport(fd, dispatcher, options.maxInFlight ?? 16, slotSize);
  } catch (e) {
    closeFuseDevice(fd);
    throw e;
  }
  try {
    mountFuse(fd, path, options);
  } catch (e) {
    await dev.close();
    closeFuseDevice(fd);
    throw e;
  }

  const signals: [Deno.Signal, () => void][] = [];
  if (options.handleSignals ?? true) {
    for (const sig of ["SIGINT", "SIGTERM"] as const) {
      const handler = () => {
        try {
          unmountFuse(path);
        } catch (e) {
          console.error("denofuse: unmount failed:", e);
        }
      };
      Deno.addSignalListener(sig, handler);
      signals.push([sig, handler]);
    }
  }
  const running = dev.run();
  let session: Session;
  const closed = running.catch((e) => {
    console.error(`denofuse: ${path}: transport failed:`, e);
    try {
      unmountFuse(path);
    } catch { /* already gone */ }
  }).finally(async () => {
    for (const [sig, handler] of signals) Deno.removeSignalListener(sig, handler);
    try {
      await fs.destroy?.();
    } catch (e) {
      console.error("denofuse: destroy failed:", e);
    }
    await dev.close();
    closeFuseDevice(fd);
  });

  const timeoutMs = options.initTimeoutMs ?? 10000;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const connection = await Promise.race([
      dispatcher.initialized,
      running.then(() => {
        throw new MountError(`${path}: the kernel ended the connection before INIT`);
      }),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new MountError(`${path}: no INIT from the kernel in ${timeoutMs} ms`)),
          timeoutMs,
        );
      }),
    ]);
    session = new Session(path, connection, dev, closed);
  } catch (e) {
    dev.stop();
    try {
      unmountFuse(path);
    } catch { /* nothing mounted */ }
    await closed;
    throw e instanceof MountError ? e : new MountError(`${path}: ${(e as Error).message}`);
  } finally {
    clearTimeout(timer);
  }

  return session;
}
