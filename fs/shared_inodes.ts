/**
 * An inode table in shared memory, for a file system that runs in every
 * queue thread at once (see `serveQueueThread`): node id → a held fd of the
 * backing object, its lookup count and a generation, plus an index from the
 * object's (device, inode number) to its node, so that one backing object
 * is one node whichever thread looked it up.
 *
 * Every thread makes a `SharedInodeTable` over the same `buffer`. Reads of
 * a node (`fd`) take no lock: the kernel never sends FORGET for a node while
 * a request on it is in flight, so a node in use cannot vanish. Lookups,
 * extra references and forgets change counts and the index under one lock
 * (a word in the buffer, taken with `Atomics`); they are short, so threads
 * spin briefly and then sleep with `Atomics.wait`.
 *
 * Node ids are `generation × 2^20 + slot`: a slot is reused after its node
 * is forgotten, with the next generation, so no node id is ever reused
 * (FUSE requires `(nodeid, generation)` to be unique for the mount's life;
 * here the node id alone is).
 *
 * @module
 */

import { staysBehindHole } from "../ops/linear_probing.ts";

/** Slots a table has by default (node ids' low 20 bits). */
export const SLOT_BITS = 20;
const SLOTS = 1 << SLOT_BITS;
/**
 * {@linkcode SharedInodeTable.fd} of a node that holds no fd: the file
 * system keeps another way back to it (a file handle).
 */
export const NO_FD = -2;
// A slot: fd + 1 (0: free, -1: a node without an fd), nlookup, generation, flags, dev major, dev minor, ino low, ino high.
const FD = 0, NLOOKUP = 1, GEN = 2, FLAGS = 3, MAJOR = 4, MINOR = 5, INO_LO = 6, INO_HI = 7;
const SLOT_WORDS = 8;
// Header words: the lock, the live count, the free-stack top, the next never-used slot, a
// counter, the entries of the index in use, and the capacity (so that another thread's
// view knows the layout).
const LOCK = 0, LIVE = 1, FREE_TOP = 2, NEXT_SLOT = 3, COUNTER = 4, INDEX_IN_USE = 5, CAPACITY = 7;
const HEADER_WORDS = 8;
/** An index entry that names no slot (slots start at 1). */
const EMPTY = 0;
/**
 * Index entries in use at first (one page). The index grows, doubling, to
 * stay at most half full: its memory is paged in as nodes come, not all at
 * once by the first few thousand (a hash touches every page).
 */
const FIRST_INDEX = 1024;

/** Flags kept with a node. */
export const InodeFlag = {
  SYMLINK: 1,
  /** A FIFO, socket or device: opening it could block or reach hardware. */
  SPECIAL: 2,
} as const;

/** A backing object's identity: device numbers and inode number. */
export interface InodeKey {
  /** Device major. */
  major: number;
  /** Device minor. */
  minor: number;
  /** Inode number (below 2^53). */
  ino: number;
}

/** The node a lookup found or made. */
export interface Found {
  /** Its node id. */
  nodeId: number;
  /** False if the node already existed: the caller's fd was not taken (close it). */
  added: boolean;
}

/** Node id → held fd, lookup count and generation, shared by every thread. */
export class SharedInodeTable {
  /** The shared memory; hand it to the other threads' tables. */
  readonly buffer: SharedArrayBuffer;
  readonly #capacity: number;
  readonly #head: Int32Array;
  readonly #slots: Int32Array;
  readonly #free: Int32Array;
  readonly #index: Int32Array;

  /**
   * A new table for up to `capacity` nodes (at most 2^20), or a view of
   * another thread's `buffer`.
   */
  constructor(bufferOrCapacity: SharedArrayBuffer | number = SLOTS) {
    const capacity = typeof bufferOrCapacity === "number"
      ? bufferOrCapacity
      : new Int32Array(bufferOrCapacity, 0, HEADER_WORDS)[CAPACITY];
    if (!(capacity > 1 && capacity <= SLOTS)) throw new RangeError(`capacity ${capacity}`);
    const indexSize = 1 << Math.ceil(Math.log2(capacity * 2));
    const words = HEADER_WORDS + capacity * SLOT_WORDS + capacity + indexSize;
    this.buffer = typeof bufferOrCapacity === "number"
      ? new SharedArrayBuffer(words * 4)
      : bufferOrCapacity;
    this.#capacity = capacity;
    this.#head = new Int32Array(this.buffer, 0, HEADER_WORDS);
    this.#slots = new Int32Array(this.buffer, HEADER_WORDS * 4, capacity * SLOT_WORDS);
    this.#free = new Int32Array(this.buffer, (HEADER_WORDS + capacity * SLOT_WORDS) * 4, capacity);
    this.#index = new Int32Array(
      this.buffer,
      (HEADER_WORDS + capacity * SLOT_WORDS + capacity) * 4,
      indexSize,
    );
    if (typeof bufferOrCapacity === "number") {
      this.#head[CAPACITY] = capacity;
      this.#head[INDEX_IN_USE] = Math.min(indexSize, FIRST_INDEX);
      this.#head[NEXT_SLOT] = 2; // slot 0: no node id 0; slot 1: the root
    }
  }

  /** Nodes held (the root included). */
  get size(): number {
    return Atomics.load(this.#head, LIVE);
  }

  /** Entries of the index in use: it grows with the nodes (at most half full). */
  get indexInUse(): number {
    return Atomics.load(this.#head, INDEX_IN_USE);
  }

  /** A number no other call on this table (in any thread) returns: for handles. */
  unique(): number {
    return Atomics.add(this.#head, COUNTER, 1) + 1;
  }

  /** Make `fd` the root (node id 1) with one lookup. Call once, before sharing. */
  setRoot(fd: number, key: InodeKey): void {
    this.#fill(1, fd, key, 0);
    this.#insert(1, key);
    this.#head[LIVE] = 1;
  }

  /** The fd of `nodeId`, {@linkcode NO_FD} if it holds none, or -1 if it is not (or no longer) a node. */
  fd(nodeId: number): number {
    const slot = nodeId % SLOTS;
    if (!(slot > 0 && slot < this.#capacity)) return -1;
    const o = slot * SLOT_WORDS;
    if (Atomics.load(this.#slots, o + GEN) !== Math.floor(nodeId / SLOTS)) return -1;
    return Atomics.load(this.#slots, o + FD) - 1;
  }

  /** The flags of `nodeId` (see {@linkcode InodeFlag}). */
  flags(nodeId: number): number {
    return Atomics.load(this.#slots, (nodeId % SLOTS) * SLOT_WORDS + FLAGS);
  }

  /** The slot of `nodeId` (its low bits): an index for data kept beside the table. */
  slotOf(nodeId: number): number {
    return nodeId % SLOTS;
  }

  /**
   * The node of `key`, with one more lookup; if there is none, a new node
   * holding `fd` (or {@linkcode NO_FD}). When the node existed, `fd` was not taken: close it.
   * Returns null when the table is full (the caller closes `fd`).
   */
  lookup(key: InodeKey, fd: number, flags: number): Found | null {
    this.#lock();
    try {
      const known = this.#find(key);
      if (known >= 0) {
        Atomics.add(this.#slots, known * SLOT_WORDS + NLOOKUP, 1);
        return { nodeId: this.#nodeId(known), added: false };
      }
      const slot = this.#allocate();
      if (slot < 0) return null;
      this.#fill(slot, fd, key, flags);
      if ((this.#head[LIVE] + 1) * 2 > this.#head[INDEX_IN_USE]) this.#grow();
      this.#insert(slot, key);
      Atomics.add(this.#head, LIVE, 1);
      return { nodeId: this.#nodeId(slot), added: true };
    } finally {
      this.#unlock();
    }
  }

  /**
   * The node of `key` with one more lookup, if there is one and it holds an
   * fd (so its inode cannot have been freed and its number reused); else 0.
   */
  refHeld(key: InodeKey): number {
    this.#lock();
    try {
      const known = this.#find(key);
      if (known < 0 || this.fd(this.#nodeId(known)) < 0) return 0;
      Atomics.add(this.#slots, known * SLOT_WORDS + NLOOKUP, 1);
      return this.#nodeId(known);
    } finally {
      this.#unlock();
    }
  }

  /** Count one more lookup of an existing node (a lookup of "."). False if it is gone. */
  ref(nodeId: number): boolean {
    this.#lock();
    try {
      if (this.fd(nodeId) === -1) return false;
      Atomics.add(this.#slots, (nodeId % SLOTS) * SLOT_WORDS + NLOOKUP, 1);
      return true;
    } finally {
      this.#unlock();
    }
  }

  /**
   * The kernel dropped `n` lookups of `nodeId`. When none are left, the node
   * goes and its fd is returned for the caller to close ({@linkcode NO_FD}
   * if it held none); else -1. The root never goes.
   */
  forget(nodeId: number, n: number): number {
    if (nodeId === 1) return -1;
    this.#lock();
    try {
      const fd = this.fd(nodeId);
      if (fd === -1) return -1;
      const slot = nodeId % SLOTS;
      const o = slot * SLOT_WORDS;
      if (Atomics.sub(this.#slots, o + NLOOKUP, n) - n > 0) return -1;
      this.#remove(slot);
      Atomics.store(this.#slots, o + FD, 0);
      Atomics.add(this.#slots, o + GEN, 1);
      this.#free[this.#head[FREE_TOP]++] = slot;
      Atomics.sub(this.#head, LIVE, 1);
      return fd;
    } finally {
      this.#unlock();
    }
  }

  /**
   * Empty the table and return every fd it held, the root's too, for the
   * caller to close: once, whichever thread asks first (later calls get []).
   */
  drain(): number[] {
    this.#lock();
    try {
      const fds: number[] = [];
      const s = this.#slots;
      for (let slot = 1; slot < this.#head[NEXT_SLOT]; slot++) {
        const fd = s[slot * SLOT_WORDS + FD] - 1;
        if (fd === -1) continue;
        if (fd >= 0) fds.push(fd);
        Atomics.store(s, slot * SLOT_WORDS + FD, 0);
        Atomics.add(s, slot * SLOT_WORDS + GEN, 1);
      }
      this.#index.fill(EMPTY, 0, this.#head[INDEX_IN_USE]);
      Atomics.store(this.#head, LIVE, 0);
      return fds;
    } finally {
      this.#unlock();
    }
  }

  #nodeId(slot: number): number {
    return Atomics.load(this.#slots, slot * SLOT_WORDS + GEN) * SLOTS + slot;
  }

  #fill(slot: number, fd: number, key: InodeKey, flags: number): void {
    const s = this.#slots;
    const o = slot * SLOT_WORDS;
    s[o + NLOOKUP] = 1;
    s[o + FLAGS] = flags;
    s[o + MAJOR] = key.major;
    s[o + MINOR] = key.minor;
    s[o + INO_LO] = key.ino % 4294967296;
    s[o + INO_HI] = Math.floor(key.ino / 4294967296);
    Atomics.store(s, o + FD, fd + 1); // last: the node is complete once its fd is there
  }

  #allocate(): number {
    const h = this.#head;
    if (h[FREE_TOP] > 0) return this.#free[--h[FREE_TOP]];
    if (h[NEXT_SLOT] >= this.#capacity) return -1;
    return h[NEXT_SLOT]++;
  }

  /** The index's mask: the entries in use, less one (read under the lock). */
  #mask(): number {
    return this.#head[INDEX_IN_USE] - 1;
  }

  /** Double the entries of the index in use and place every node again (under the lock). */
  #grow(): void {
    const index = this.#index;
    const used = this.#head[INDEX_IN_USE];
    if (used >= index.length) return;
    const slots: number[] = [];
    for (let i = 0; i < used; i++) {
      if (index[i] !== EMPTY) slots.push(index[i]);
      index[i] = EMPTY;
    }
    this.#head[INDEX_IN_USE] = used * 2;
    for (const slot of slots) this.#insert(slot, this.#keyOf(slot));
  }

  #hash(key: InodeKey): number {
    let x = (key.ino % 4294967296) ^ Math.imul(Math.floor(key.ino / 4294967296), 0x9e3779b1);
    x ^= Math.imul(key.minor, 0x85ebca6b) ^ Math.imul(key.major, 0xc2b2ae35);
    x = Math.imul(x ^ (x >>> 16), 0x7feb352d);
    return (x ^ (x >>> 15)) & this.#mask();
  }

  #matches(slot: number, key: InodeKey): boolean {
    const s = this.#slots;
    const o = slot * SLOT_WORDS;
    return s[o + INO_LO] === (key.ino % 4294967296 | 0) &&
      s[o + INO_HI] === Math.floor(key.ino / 4294967296) &&
      s[o + MINOR] === key.minor && s[o + MAJOR] === key.major;
  }

  /** The slot of `key` in the index, or -1 (under the lock). */
  #find(key: InodeKey): number {
    const mask = this.#mask();
    for (let i = this.#hash(key), n = 0; n <= mask; i = (i + 1) & mask, n++) {
      const v = this.#index[i];
      if (v === EMPTY) return -1;
      if (v > 0 && this.#matches(v, key)) return v;
    }
    return -1;
  }

  #insert(slot: number, key: InodeKey): void {
    const mask = this.#mask();
    for (let i = this.#hash(key);; i = (i + 1) & mask) {
      const v = this.#index[i];
      if (v === EMPTY) {
        this.#index[i] = slot;
        return;
      }
    }
  }

  /** The key of the node in `slot`. */
  #keyOf(slot: number): InodeKey {
    const s = this.#slots;
    const o = slot * SLOT_WORDS;
    return {
      major: s[o + MAJOR],
      minor: s[o + MINOR],
      ino: (s[o + INO_LO] >>> 0) + s[o + INO_HI] * 4294967296,
    };
  }

  /**
   * Take `slot` out of the index, moving back each later entry of its run
   * that may sit in the hole (no tombstones: a lookup that misses stops at
   * the first empty entry, however many nodes came and went).
   */
  #remove(slot: number): void {
    const index = this.#index;
    const mask = this.#mask();
    let hole = this.#hash(this.#keyOf(slot));
    while (index[hole] !== slot) {
      if (index[hole] === EMPTY) return;
      hole = (hole + 1) & mask;
    }
    for (let k = (hole + 1) & mask; index[k] !== EMPTY; k = (k + 1) & mask) {
      if (staysBehindHole(hole, k, this.#hash(this.#keyOf(index[k])))) continue;
      index[hole] = index[k];
      hole = k;
    }
    index[hole] = EMPTY;
  }

  #lock(): void {
    const h = this.#head;
    for (let spins = 0; Atomics.compareExchange(h, LOCK, 0, 1) !== 0; spins++) {
      // Held only for a few hash probes: spin a little, then sleep until woken.
      if (spins > 100) Atomics.wait(h, LOCK, 1, 1);
    }
  }

  #unlock(): void {
    Atomics.store(this.#head, LOCK, 0);
    Atomics.notify(this.#head, LOCK, 1);
  }
}
