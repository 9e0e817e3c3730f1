/**
 * Kernel passthrough (FUSE_PASSTHROUGH, Linux 6.9+): an open file whose
 * data is a whole backing fd can be handed to the kernel, which then reads,
 * writes, splices and maps the backing file itself; the server sees no
 * READ or WRITE of it.
 *
 * The kernel names a backing file by a backing id, which
 * `FUSE_DEV_IOC_BACKING_OPEN` on the /dev/fuse fd makes from an fd and
 * `FUSE_DEV_IOC_BACKING_CLOSE` drops. Its rules, which this table keeps:
 * an inode has one backing file at a time (a second gives EBUSY), so every
 * open of an inode while one is open shares its id; the id is dropped when
 * the last of those opens is released. The kernel opens a backing file of
 * its own for each open, with that open's flags, from the id's path, so
 * which fd made the id does not matter.
 *
 * A file with setuid or setgid bits is not handed over: under
 * FUSE_HANDLE_KILLPRIV_V2 the kernel leaves clearing them on a write by an
 * unprivileged caller to the server's WRITE, which a passed-through write
 * never reaches. Its data stays with the server, which clears them as a
 * local file system would.
 *
 * The kernel also wants all opens of an inode in one mode at a time: while
 * one is passed through, another open without passthrough fails (EIO); while
 * one is served through the page cache, a passed-through open fails
 * (ETXTBSY, then EIO). So the table counts both kinds per inode: an inode
 * open in passthrough passes every further whole-file open through (a file
 * made setuid meanwhile included), and an inode with a served open serves
 * every further one, until the last of them is released. (A `directIo`
 * open takes no side; a window of a file cannot be passed through, so it
 * fails while the inode is.)
 *
 * The table lives in shared memory: OPEN and RELEASE of one inode may be
 * dispatched by different serving threads. A small lock guards it; the
 * critical section is one lookup and, at most, one ioctl.
 *
 * @module
 */

import { AT, cstr, errno, libc } from "../ffi/libc.ts";
import { Errno, errnoName } from "../ffi/errno.ts";
import { staysBehindHole } from "./linear_probing.ts";

/** `FUSE_DEV_IOC_BACKING_OPEN`: `_IOW(229, 1, struct fuse_backing_map)`. */
const FUSE_DEV_IOC_BACKING_OPEN = 0x4010e501n;
/** `FUSE_DEV_IOC_BACKING_CLOSE`: `_IOW(229, 2, uint32_t)`. */
const FUSE_DEV_IOC_BACKING_CLOSE = 0x4004e502n;

/** Inodes that may hold a backing id at once; past it, opens are served by the session. */
const CAPACITY = 1 << 14;
/** Handles whose opens are counted can be told apart up to this number. */
const HANDLES = 1 << 20;

/** What a handle's open counted (per handle, in shared memory). */
const PASSED = 1, SERVED = 2;
/** Words per inode slot: backing id, passed-through opens, served opens. */
const SLOT = 3;

// The header of the shared memory (Int32 words).
const LOCK = 0;
/** 0: passthrough in use; 1: refused (the first failure turns it off for the mount). */
const REFUSED = 1;
const HEADER = 4;

const S_ISUID = 0o4000, S_ISGID = 0o2000;
const STATX_MODE = 2;
const EMPTY = cstr("");

/** Whether the file open at `fd` has setuid or setgid bits (or cannot be told: then yes). */
function privileged(fd: number): boolean {
  if (libc.statx(fd, EMPTY, AT.EMPTY_PATH, STATX_MODE, statxScratch) < 0) return true;
  return (statxView.getUint16(28, true) & (S_ISUID | S_ISGID)) !== 0;
}

/** struct statx for {@linkcode privileged}, one per thread (a synchronous call). */
const statxScratch = new Uint8Array(256);
const statxView = new DataView(statxScratch.buffer);

/** What a {@linkcode BackingIds} keeps in shared memory. */
export interface BackingIdsShared {
  /** Lock, state, and per slot: backing id, passed-through opens, served opens. */
  readonly words: SharedArrayBuffer;
  /** Per slot: the node id (0: free). */
  readonly nodes: SharedArrayBuffer;
  /** Per handle: what its open counted (passed through, served, or nothing). */
  readonly handles: SharedArrayBuffer;
}

/** Backing ids per inode, shared by the serving threads of one session. */
export class BackingIds {
  /** The shared memory, for another thread's view. */
  readonly shared: BackingIdsShared;
  readonly #fuseFd: number;
  readonly #words: Int32Array;
  readonly #nodes: Float64Array;
  readonly #handles: Uint8Array;
  /** Says, once, why kernel passthrough was turned off. */
  #onRefused: (why: string) => void;

  /**
   * The table of the connection on `fuseFd` (a new one, or a view of
   * another thread's `shared`); `onRefused` hears why passthrough stopped.
   */
  constructor(fuseFd: number, shared?: BackingIdsShared, onRefused?: (why: string) => void) {
    this.#fuseFd = fuseFd;
    this.shared = shared ?? {
      words: new SharedArrayBuffer((HEADER + SLOT * CAPACITY) * 4),
      nodes: new SharedArrayBuffer(CAPACITY * 8),
      handles: new SharedArrayBuffer(HANDLES),
    };
    this.#words = new Int32Array(this.shared.words);
    this.#nodes = new Float64Array(this.shared.nodes);
    this.#handles = new Uint8Array(this.shared.handles);
    this.#onRefused = onRefused ?? (() => {});
  }

  /** False once the kernel refused a backing file: the mount serves file data itself. */
  get active(): boolean {
    return Atomics.load(this.#words, REFUSED) === 0;
  }

  /** Backing ids held now (for tests: none after every release). */
  get held(): number {
    let n = 0;
    for (let i = 0; i < CAPACITY; i++) {
      if (this.#nodes[i] > 0 && this.#words[HEADER + SLOT * i + 1] > 0) n++;
    }
    return n;
  }

  /**
   * The backing id for an open `fh` of `nodeId` served from `fd`, or 0 when
   * the session serves its data. `whole`: the open's data is all of `fd`
   * (no window) and it may go to the kernel (not `directIo`); `directIo`:
   * the kernel neither caches nor passes it through.
   */
  acquire(nodeId: number, fh: number, fd: number, whole: boolean, directIo: boolean): number {
    if (!(fh >= 0 && fh < HANDLES) || nodeId <= 0) return 0;
    this.#lock();
    try {
      let slot = this.#find(nodeId);
      const w = this.#words;
      if (slot >= 0 && w[HEADER + SLOT * slot + 1] > 0) {
        // The inode is open in passthrough: the kernel wants this open so too.
        if (!whole) return 0; // (it will fail it: documented)
        w[HEADER + SLOT * slot + 1]++;
        this.#handles[fh] = PASSED;
        return w[HEADER + SLOT * slot];
      }
      // Once refused, nothing new goes to the kernel (inodes already passed
      // through keep their ids, above).
      if (directIo || !this.active) return 0;
      if (slot < 0) {
        slot = this.#free(nodeId);
        if (slot < 0) return 0; // full: this open is served, uncounted
        this.#nodes[slot] = nodeId;
        w.fill(0, HEADER + SLOT * slot, HEADER + SLOT * (slot + 1));
      }
      const at = HEADER + SLOT * slot;
      // An inode with a served open has its pages cached: serve this one too.
      const id = whole && w[at + 2] === 0 && !privileged(fd) ? this.#open(fd) : 0;
      if (id > 0) {
        w[at] = id;
        w[at + 1] = 1;
        this.#handles[fh] = PASSED;
      } else {
        w[at + 2]++;
        this.#handles[fh] = SERVED;
      }
      return id;
    } finally {
      this.#unlock();
    }
  }

  /**
   * Handle `fh` of `nodeId` is released: the inode's last passed-through
   * open drops its backing id, and its last counted open its slot.
   */
  release(nodeId: number, fh: number): void {
    if (!(fh >= 0 && fh < HANDLES) || this.#handles[fh] === 0) return;
    this.#lock();
    try {
      const kind = this.#handles[fh];
      this.#handles[fh] = 0;
      const slot = this.#find(nodeId);
      if (slot < 0) return;
      const at = HEADER + SLOT * slot;
      if (kind === PASSED && --this.#words[at + 1] === 0) {
        const id = new Uint32Array([this.#words[at]]);
        libc.ioctl(this.#fuseFd, FUSE_DEV_IOC_BACKING_CLOSE, new Uint8Array(id.buffer));
        this.#words[at] = 0;
      }
      if (kind === SERVED) this.#words[at + 2]--;
      if (this.#words[at + 1] <= 0 && this.#words[at + 2] <= 0) this.#remove(slot);
    } finally {
      this.#unlock();
    }
  }

  /** `FUSE_DEV_IOC_BACKING_OPEN` of `fd`: the id, or 0 (and passthrough is off for good). */
  #open(fd: number): number {
    const map = new Int32Array(4); // struct fuse_backing_map { s32 fd; u32 flags; u64 padding; }
    map[0] = fd;
    const id = libc.ioctl(this.#fuseFd, FUSE_DEV_IOC_BACKING_OPEN, new Uint8Array(map.buffer));
    if (id > 0) return id;
    const e = errno();
    // EBUSY: this inode has a backing file we did not make (cannot happen
    // through this table); anything else says the kernel will not do it.
    if (e !== Errno.EBUSY && Atomics.compareExchange(this.#words, REFUSED, 0, 1) === 0) {
      this.#onRefused(
        `the kernel refused a backing file (FUSE_DEV_IOC_BACKING_OPEN: ${errnoName(e)}); ` +
          "serving file data from the server",
      );
    }
    return 0;
  }

  /**
   * Where `nodeId` is looked for first. The table is probed linearly from
   * there, and a removal shifts the rest of its run back (no tombstones):
   * a lookup stops at the first free slot, however many opens came and went.
   */
  #home(nodeId: number): number {
    const mixed = Math.imul((nodeId % 4294967296) ^ Math.floor(nodeId / 4294967296), 0x9e3779b1);
    return (mixed ^ (mixed >>> 15)) & (CAPACITY - 1);
  }

  #find(nodeId: number): number {
    for (
      let i = 0, slot = this.#home(nodeId);
      i < CAPACITY;
      i++, slot = (slot + 1) & (CAPACITY - 1)
    ) {
      const n = this.#nodes[slot];
      if (n === nodeId) return slot;
      if (n === 0) return -1;
    }
    return -1;
  }

  #free(nodeId: number): number {
    for (
      let i = 0, slot = this.#home(nodeId);
      i < CAPACITY;
      i++, slot = (slot + 1) & (CAPACITY - 1)
    ) {
      if (this.#nodes[slot] === 0) return slot;
    }
    return -1;
  }

  /** Empty `slot`, moving back each later entry of its run that may sit there. */
  #remove(slot: number): void {
    const nodes = this.#nodes;
    const w = this.#words;
    let hole = slot;
    for (let k = (hole + 1) & (CAPACITY - 1); nodes[k] !== 0; k = (k + 1) & (CAPACITY - 1)) {
      if (staysBehindHole(hole, k, this.#home(nodes[k]))) continue;
      nodes[hole] = nodes[k];
      w.copyWithin(HEADER + SLOT * hole, HEADER + SLOT * k, HEADER + SLOT * (k + 1));
      hole = k;
    }
    nodes[hole] = 0;
    w.fill(0, HEADER + SLOT * hole, HEADER + SLOT * (hole + 1));
  }

  #lock(): void {
    while (Atomics.compareExchange(this.#words, LOCK, 0, 1) !== 0) {
      Atomics.wait(this.#words, LOCK, 1, 1);
    }
  }

  #unlock(): void {
    Atomics.store(this.#words, LOCK, 0);
    Atomics.notify(this.#words, LOCK, 1);
  }
}
