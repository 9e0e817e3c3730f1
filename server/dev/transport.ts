/**
 * The classic transport: requests are read from `/dev/fuse` and replies
 * written back to it.
 *
 * The fd is non-blocking. Reads are synchronous (so errno is exact) and are
 * repeated while requests are queued. When the queue is empty the loop
 * first gives handlers a few microtask turns, then, while requests are
 * flowing, waits up to a millisecond with `poll` on the serving thread
 * itself (no other thread is woken when the next request comes), and only
 * when idle waits with `poll` on Deno's blocking pool, which never blocks
 * the event loop. Each request gets its own slot of pinned memory, kept
 * until its reply is written, so async FileSystem methods overlap: a slow
 * request never holds up the next one.
 *
 * With a ring attached ({@linkcode DevTransport.attachRing}), backing calls
 * and fd data go through it, and this loop submits and reaps it: the same
 * waits watch `/dev/fuse` and the ring's fd together.
 *
 * @module
 */

import { Errno, SystemError } from "../../ffi/errno.ts";
import { check, errno, libc } from "../../ffi/libc.ts";
import { PinnedRegion } from "../../ffi/memory.ts";
import { InHeader, Opcode, OutHeader, WriteIn } from "../../ops/abi.ts";
import type { Dispatcher } from "../../ops/dispatch.ts";
import { setU64 } from "../../ops/codec.ts";
import type { BackingIo } from "../../ops/backing_io.ts";
import type { Ring } from "../../ffi/ring.ts";
import { DirectIo } from "../io/direct_io.ts";
import { pinnedRead, pinnedWrite, RingIo } from "../io/ring_io.ts";
import { SlotExchange } from "../io/slot_exchange.ts";
import {
  BUSY_WAIT_US,
  coalesced,
  makeYield,
  settleHandlers,
  trimBeforeSleep,
} from "../io/yield.ts";

/** Requests handled per batch before yielding to the event loop. */
const BATCH_BUDGET = 64;
const POLLIN = 1;
const EFD_NONBLOCK = 0o4000;
const EFD_CLOEXEC = 0o2000000;
/** The eventfd increment that wakes a waiting loop. */
const WAKE = new BigUint64Array([1n]);

/** Counters of a transport, for tests and `-d`. */
export interface TransportCounters {
  /** Requests received. */
  requests: number;
  /** Replies written. */
  replies: number;
  /** Reads answered from an fd source. */
  fdReads: number;
  /** Writes served into an fd sink. */
  fdWrites: number;
}

const COUNTER_NAMES = ["requests", "replies", "fdReads", "fdWrites"] as const;

/** {@linkcode TransportCounters} kept in four Float64s another thread can read. */
export function sharedCounters(v: Float64Array): TransportCounters {
  const counters = {} as TransportCounters;
  COUNTER_NAMES.forEach((name, i) =>
    Object.defineProperty(counters, name, {
      get: () => v[i],
      set: (n: number) => v[i] = n,
      enumerable: true,
    })
  );
  return counters;
}

/**
 * Where things sit in a slot. Request and reply data both start on a page
 * boundary (DATA), so a backing fd opened with O_DIRECT can read into and
 * write from the slot: a request is read in at DATA - REQUEST_HEAD (its
 * header and write_in end exactly at DATA), and a reply goes out with writev
 * as the out header (at REPLY_HEADER) and the payload at DATA.
 */
const SLOT = {
  REPLY_HEADER: 0,
  IOVECS: 64,
  DATA: 4096,
  REQUEST_HEAD: InHeader.SIZE + WriteIn.SIZE,
} as const;

/** One request slot: a piece of pinned memory, and the Exchange over it. */
class DevSlot extends SlotExchange {
  /** The slot's index in its transport. */
  readonly index: number;
  /** The `/dev/fuse` fd the reply is written to (the one the request was read from). */
  replyFd: number;
  /** Where a request is read in, and how much room it has. */
  readonly readPointer: Deno.PointerObject;
  readonly readSize: bigint;
  readonly #base: number;
  readonly #region: PinnedRegion;
  readonly #iovecs: Deno.PointerObject;
  #transport: DevTransport;

  constructor(
    transport: DevTransport,
    region: PinnedRegion,
    index: number,
    size: number,
    replyFd: number,
  ) {
    const base = index * size;
    const headerOffset = base + SLOT.DATA - SLOT.REQUEST_HEAD;
    super(region.view, headerOffset, 0, region.view, base + SLOT.DATA, size - SLOT.DATA);
    this.index = index;
    this.replyFd = replyFd;
    this.#transport = transport;
    this.#region = region;
    this.#base = base;
    this.readPointer = region.at(headerOffset);
    this.readSize = BigInt(size - (SLOT.DATA - SLOT.REQUEST_HEAD));
    // iovec[0]: the out header; iovec[1]: the payload (its length set per reply).
    const v = region.view;
    const iov = base + SLOT.IOVECS;
    v.setBigUint64(iov, region.address + BigInt(base + SLOT.REPLY_HEADER), true);
    v.setBigUint64(iov + 8, BigInt(OutHeader.SIZE), true);
    v.setBigUint64(iov + 16, region.address + BigInt(base + SLOT.DATA), true);
    this.#iovecs = region.at(iov);
  }

  get io(): BackingIo {
    return this.#transport.io;
  }

  reply(unique: number, error: number, length: number): void {
    const v = this.out;
    const o = this.#base + SLOT.REPLY_HEADER;
    v.setUint32(o + OutHeader.len, OutHeader.SIZE + length, true);
    v.setInt32(o + OutHeader.error, error, true);
    setU64(v, o + OutHeader.unique, unique);
    v.setBigUint64(this.#base + SLOT.IOVECS + 24, BigInt(length), true);
    this.#transport.send(this, this.#iovecs);
  }

  protected readInto(fd: number, offset: number, length: number): number | Promise<number> {
    this.#transport.counters.fdReads++;
    // Through the ring, when there is one: a slow read never stalls the loop.
    const address = this.#region.address + BigInt(this.outOffset);
    return pinnedRead(this.#transport.ring, fd, address, length, offset);
  }

  protected writeFrom(fd: number, offset: number, length: number): number | Promise<number> {
    this.#transport.counters.fdWrites++;
    const address = this.#region.address + BigInt(this.dataOffset);
    return pinnedWrite(this.#transport.ring, fd, address, length, offset);
  }

  noReply(): void {
    this.#transport.release(this);
  }
}

/** Serves a session's requests over its `/dev/fuse` fd. */
export class DevTransport {
  /** Counters since start. */
  readonly counters: TransportCounters;
  /**
   * Backing calls and fd data on the ring from {@linkcode attachRing};
   * null until then (direct calls).
   */
  ring: RingIo | null = null;
  #ring: Ring | null = null;
  #flush = coalesced(() => this.#pumpRing(), (e) => this.#fail(e));
  /** Requests dropped for a header that lies about their length. */
  #malformed = 0;
  /** Why serving cannot go on (the ring failed outside the loop), once it cannot. */
  #failure: unknown = null;
  /** Bumped when a ring operation is prepared or a reply sent: handlers moved. */
  #moved = 0;
  #direct = new DirectIo();
  #fd: number;
  #dispatcher: Dispatcher;
  #region: PinnedRegion;
  #all: DevSlot[] = [];
  #free: DevSlot[];
  /** Where requests this thread does not answer go (a /dev/fuse thread without a FileSystem). */
  #handOver: ((request: Uint8Array) => void) | null = null;
  /** Called when a slot is free again, instead of the free list (slots filled by another thread). */
  #onSlotFree: ((index: number) => void) | null = null;
  #slotWaiter: (() => void) | null = null;
  /**
   * struct pollfd for /dev/fuse, for the wake eventfd ({@linkcode stop}),
   * then for the ring's fd once attached: an idle loop waits on them with
   * no timeout, so an idle mount costs no wake-ups.
   */
  #pollfds = new PinnedRegion(24, { lazy: true });
  /**
   * A poll runs on Deno's blocking pool and writes `revents` when it
   * returns, even after this thread is gone (a Worker that died): its
   * pollfds live outside the JS heap, and are unmapped only when no poll
   * is in flight.
   */
  #polling = false;
  #nfds = 2n;
  #wakeFd: number;
  #stopped = false;
  #othersPending: () => number = () => 0;
  #slots: number;
  #yield: () => Promise<void>;
  #closeYield: () => void;

  /**
   * @param fd the session's `/dev/fuse` fd, opened O_NONBLOCK
   * @param slots how many requests may be in flight at once
   * @param slotSize bytes per slot: at least max_write plus headers
   * @param shared four Float64s to keep the counters in (shared with
   *   another thread), else the counters are plain numbers
   */
  constructor(
    fd: number,
    dispatcher: Dispatcher,
    slots: number,
    slotSize: number,
    shared?: Float64Array,
  ) {
    this.counters = shared ? sharedCounters(shared) : {
      requests: 0,
      replies: 0,
      fdReads: 0,
      fdWrites: 0,
    };
    this.#fd = fd;
    this.#dispatcher = dispatcher;
    this.#slots = slots;
    // read(2) and write(2) copy in and out of the slots, and ring backing
    // calls name them by address (never as fixed buffers): nothing needs
    // them locked, so a slot costs memory only for the pages requests touch
    // (a thread that sees only FORGETs holds a page per slot, not 1 MiB).
    this.#region = new PinnedRegion(slots * slotSize, { lazy: true });
    for (let i = 0; i < slots; i++) {
      this.#all.push(new DevSlot(this, this.#region, i, slotSize, fd));
    }
    this.#free = this.#all.toReversed();
    this.#wakeFd = check(libc.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC), "eventfd");
    const pv = this.#pollfds.view;
    pv.setInt32(0, fd, true);
    pv.setInt16(4, POLLIN, true);
    pv.setInt32(8, this.#wakeFd, true);
    pv.setInt16(12, POLLIN, true);
    [this.#yield, this.#closeYield] = makeYield();
  }

  /**
   * Have this transport's loop submit and reap `ring` from now on (the
   * caller closes it after {@linkcode run} has settled), and, with
   * `backingCalls`, do backing calls and fd data through it. Returns a
   * function that has what is prepared on `ring` submitted soon.
   */
  attachRing(ring: Ring, backingCalls = true): () => void {
    this.#ring = ring;
    const kick = () => this.#flushSoon();
    if (backingCalls) this.ring = new RingIo(ring, kick);
    const pv = this.#pollfds.view;
    pv.setInt32(16, ring.fd, true);
    pv.setInt16(20, POLLIN, true);
    this.#nfds = 3n;
    return kick;
  }

  /**
   * Count requests that arrived elsewhere and are being answered on this
   * thread (handed over by queue threads): while there are any, the loop
   * gives handlers their microtask turns before it blocks.
   */
  watchPending(count: () => number): void {
    this.#othersPending = count;
  }

  /**
   * Hand every request this thread does not answer itself to `handOver`
   * (with the request's bytes, valid during the call): all but READ and
   * WRITE of handles backed by an fd. For a /dev/fuse thread whose
   * FileSystem lives on another thread.
   */
  handOverTo(handOver: (request: Uint8Array) => void): void {
    this.#handOver = handOver;
  }

  /**
   * Serve the request another thread copied into slot `index` (`length`
   * bytes, read from `replyFd`, which gets the reply); `onSlotFree` is told
   * when the slot can take the next one. Such a transport is never `run`.
   */
  serveCopied(index: number, length: number, replyFd: number): void {
    const slot = this.#all[index];
    slot.replyFd = replyFd;
    this.#handle(slot, length);
  }

  /** Report freed slots to `fn` instead of reusing them here (see {@linkcode serveCopied}). */
  whenSlotFree(fn: (index: number) => void): void {
    this.#onSlotFree = fn;
  }

  /** Where slot `index` takes a request in, and its room (for a thread that copies one in). */
  slotArea(index: number): { address: bigint; size: number } {
    const slot = this.#all[index];
    return {
      address: this.#region.address + BigInt(slot.headerOffset),
      size: Number(slot.readSize),
    };
  }

  /** Backing calls offered to the file system with each request. */
  get io(): BackingIo {
    return this.ring ?? this.#direct;
  }

  /** Bytes of slot memory mapped (resident only where requests have touched it). */
  get memory(): number {
    return this.#region.size;
  }

  /** Serve until the kernel ends the connection (unmount or abort). */
  async run(): Promise<void> {
    try {
      let budget = BATCH_BUDGET;
      let busy = false;
      while (!this.#stopped) {
        const slot = this.#free.pop() ?? await this.#waitForSlot();
        if (slot === null) break;
        const n = libc.read(this.#fd, slot.readPointer, slot.readSize);
        if (n < 0) {
          const e = errno();
          this.#free.push(slot);
          if (e === Errno.EAGAIN) {
            const reaped = this.#pumpRing();
            if (reaped > 0) {
              // Ring completions (backing calls, requests handed over by
              // queue threads) count as work: stay busy, yield on budget.
              busy = true;
              budget -= reaped;
              if (budget <= 0) {
                budget = BATCH_BUDGET;
                await this.#yield();
              }
              continue;
            }
            const pending = this.#free.length < this.#slots || this.#othersPending() > 0;
            if (pending && await settleHandlers(() => this.#moved)) {
              continue;
            }
            if (busy && libc.poll(this.#pollfds.pointer, this.#nfds, BUSY_WAIT_US / 1000) > 0) {
              continue;
            }
            busy = false;
            trimBeforeSleep();
            this.#polling = true;
            await libc.poll_wait(this.#pollfds.pointer, this.#nfds, -1);
            this.#polling = false;
            continue;
          }
          // ENOENT: the request was interrupted before we read it.
          if (e === Errno.EINTR || e === Errno.ENOENT) continue;
          if (e === Errno.ENODEV || e === Errno.ECONNABORTED) return;
          throw new SystemError("read", e, "/dev/fuse");
        }
        busy = true;
        this.#handle(slot, n);
        if (--budget === 0) {
          budget = BATCH_BUDGET;
          await this.#yield();
        }
      }
    } finally {
      this.#stopped = true;
      this.#closeYield();
      this.#slotWaiter?.();
    }
    if (this.#failure) throw this.#failure;
  }

  /** The ring failed where no caller could catch it: end {@linkcode run} with the error. */
  #fail(e: unknown): void {
    this.#failure ??= e;
    this.stop();
  }

  /** Stop reading (the connection itself is ended by unmounting). */
  stop(): void {
    this.#stopped = true;
    this.#slotWaiter?.();
    // End a wait in poll (a nonblocking write of 8 bytes: it cannot block).
    if (this.#wakeFd >= 0) libc.write(this.#wakeFd, Deno.UnsafePointer.of(WAKE), 8n);
  }

  /**
   * Free the pinned memory once every in-flight request has replied (call
   * after {@linkcode run} has settled). A method still running after
   * `graceMs` keeps its slot: the memory is then left mapped rather than
   * freed under it.
   */
  async close(graceMs = 2000): Promise<void> {
    // A transport that never ran (slots for requests other threads copy
    // in) still holds its yield channel, which keeps the process alive.
    this.#closeYield();
    const deadline = Date.now() + graceMs;
    while (this.#free.length < this.#slots && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    if (this.#free.length === this.#slots) this.#region.close();
    if (this.#polling) return; // its poll still holds the pollfds and the eventfd
    if (this.#wakeFd >= 0) libc.close(this.#wakeFd);
    this.#wakeFd = -1;
    this.#pollfds.close();
  }

  /** Submit prepared ring operations and run the handlers of completed ones. */
  #pumpRing(): number {
    const ring = this.#ring;
    if (!ring) return 0;
    if (ring.hasUnsubmitted) ring.submit();
    return ring.reap();
  }

  #flushSoon(): void {
    this.#moved++;
    this.#flush();
  }

  #handle(slot: DevSlot, n: number): void {
    this.counters.requests++;
    const v = slot.header;
    const o = slot.headerOffset;
    if (n < InHeader.SIZE || v.getUint32(o + InHeader.len, true) !== n) {
      // Without a whole header there is no unique id to answer.
      if (this.#malformed++ === 0) {
        console.error(`denofuse: dropped a malformed request of ${n} bytes (reported once)`);
      }
      this.release(slot);
      return;
    }
    const opcode = v.getUint32(o + InHeader.opcode, true);
    const arg = o + InHeader.SIZE;
    if (this.#handOver && !this.#dispatcher.backingFds.backs(opcode, slot.header, arg)) {
      this.#handOver(slot.outBytes.subarray(o, o + n));
      this.release(slot);
      return;
    }
    const body = n - InHeader.SIZE;
    const argSize = Math.min(this.#dispatcher.argSize(opcode), body);
    // INIT's argument grew over protocol versions: hand over all of it.
    const argSlot = opcode === Opcode.INIT ? body : argSize;
    slot.argOffset = arg;
    slot.argLength = argSlot;
    slot.dataOffset = slot.argOffset + argSlot;
    slot.dataLength = body - argSlot;
    this.#dispatcher.dispatch(slot);
  }

  /** Write the reply described by the slot's two iovecs, and free the slot. */
  send(slot: DevSlot, iovecs: Deno.PointerObject): void {
    const n = libc.writev(slot.replyFd, iovecs, 2);
    if (n < 0) {
      const e = errno();
      // ENOENT: the request was interrupted or aborted; nobody waits for it.
      if (e !== Errno.ENOENT && e !== Errno.ENODEV && e !== Errno.ECONNABORTED) {
        console.error(new SystemError("writev", e, "/dev/fuse").message);
      }
    } else {
      this.counters.replies++;
    }
    this.#moved++;
    this.release(slot);
  }

  /** Return a slot to the free list. */
  release(slot: DevSlot): void {
    if (this.#onSlotFree) return this.#onSlotFree(slot.index);
    this.#free.push(slot);
    const wake = this.#slotWaiter;
    this.#slotWaiter = null;
    wake?.();
  }

  /**
   * Every slot is in use: wait for a reply to free one. Their handlers may
   * be waiting on the ring, which only this loop reaps, so reap it too.
   */
  async #waitForSlot(): Promise<DevSlot | null> {
    while (!this.#stopped) {
      const slot = this.#free.pop();
      if (slot) return slot;
      if (this.#pumpRing() > 0 || await settleHandlers(() => this.#moved)) continue;
      const released = new Promise<void>((resolve) => this.#slotWaiter = resolve);
      const ring = this.#ring;
      await (ring && ring.inFlight > 0 ? Promise.race([released, ring.wait()]) : released);
    }
    return null;
  }
}
