/**
 * A /dev/fuse serving thread, inside its Worker: a clone of the session's
 * fd, read by a {@linkcode DevTransport} of its own. Without a FileSystem
 * in the thread it serves READ and WRITE of fd-backed handles and hands
 * every other request to the session's thread.
 *
 * @module
 */

import { Ring } from "../../ffi/ring.ts";
import { prepMsgRing } from "../../ffi/sqe.ts";
import type { Dispatcher } from "../../ops/dispatch.ts";
import { cloneFuseDevice, closeFuseDevice } from "../mount/mount.ts";
import type { ServingThread, ThreadSetup } from "../workers/messages.ts";
import { DevTransport } from "./transport.ts";

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

/** No ring to take MSG_RINGs: a /dev/fuse thread is stopped by a message. */
const NO_RING = { ringFd: -1, commitUserData: -1, stopUserData: -1, faultUserData: -1 };

/** Set up this thread's /dev/fuse transport over a clone of the session's fd. */
export function startDevThread(s: DevThreadSetup, dispatcher: Dispatcher): ServingThread {
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
  return {
    ready: NO_RING,
    serve: () => dev.run(),
    release,
    control: (m) => {
      if (m.type === "fault") throw new Error("fault injected into a /dev/fuse thread");
      release(); // asked to stop
    },
  };
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
