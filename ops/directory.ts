/**
 * Directory listings written straight into the reply buffer: a readdir
 * method adds entries until the buffer is full, with no intermediate array.
 *
 * @module
 */

import { Dirent, direntAlign, DirentPlus } from "./abi.ts";
import { encodeEntry, setU64 } from "./codec.ts";
import type { Entry } from "./records.ts";

const encoder = new TextEncoder();

/** Write one `fuse_dirent` at `pos`; returns the new end, or -1 if it does not fit. */
function putDirent(
  bytes: Uint8Array,
  view: DataView,
  pos: number,
  end: number,
  name: string,
  ino: number,
  mode: number,
  offset: number,
): number {
  const nameAt = pos + Dirent.SIZE;
  if (nameAt >= end) return -1;
  const { read, written } = encoder.encodeInto(
    name,
    bytes.subarray(nameAt, end),
  );
  if (read < name.length) return -1;
  const next = pos + direntAlign(Dirent.SIZE + written);
  if (next > end) return -1;
  setU64(view, pos + Dirent.ino, ino);
  setU64(view, pos + Dirent.off, offset);
  view.setUint32(pos + Dirent.namelen, written, true);
  view.setUint32(pos + Dirent.type, (mode & 0o170000) >>> 12, true);
  bytes.fill(0, nameAt + written, next);
  return next;
}

/**
 * The reply to READDIR. Call {@linkcode DirectoryList.add} for each entry
 * from the requested offset on; stop when it returns false.
 */
export class DirectoryList {
  #bytes: Uint8Array;
  #view: DataView;
  #start: number;
  #pos: number;
  #end: number;

  /** @internal Made by the dispatcher over the reply area. */
  constructor(bytes: Uint8Array, view: DataView, start: number, size: number) {
    this.#bytes = bytes;
    this.#view = view;
    this.#start = this.#pos = start;
    this.#end = start + size;
  }

  /**
   * Add an entry. `mode` supplies the file type (`S.IFDIR`, `S.IFREG`, ...);
   * `offset` is the value the kernel passes back to continue after this
   * entry. Returns false, and adds nothing, when the reply is full.
   */
  add(name: string, ino: number, mode: number, offset: number): boolean {
    const next = putDirent(
      this.#bytes,
      this.#view,
      this.#pos,
      this.#end,
      name,
      ino,
      mode,
      offset,
    );
    if (next < 0) return false;
    this.#pos = next;
    return true;
  }

  /** Bytes used so far. */
  get length(): number {
    return this.#pos - this.#start;
  }
}

/**
 * The reply to READDIRPLUS: entries with their attributes. Each accepted
 * entry with a non-zero `nodeId` counts one lookup, as a LOOKUP reply does;
 * for "." and ".." pass `nodeId: 0`, which the kernel does not count.
 */
export class DirectoryPlusList {
  #bytes: Uint8Array;
  #view: DataView;
  #start: number;
  #pos: number;
  #end: number;
  #entryTimeout: number;
  #attrTimeout: number;

  /** @internal Made by the dispatcher over the reply area. */
  constructor(
    bytes: Uint8Array,
    view: DataView,
    start: number,
    size: number,
    entryTimeout: number,
    attrTimeout: number,
  ) {
    this.#bytes = bytes;
    this.#view = view;
    this.#start = this.#pos = start;
    this.#end = start + size;
    this.#entryTimeout = entryTimeout;
    this.#attrTimeout = attrTimeout;
  }

  /** Add an entry; returns false, and adds nothing, when the reply is full. */
  add(name: string, entry: Entry, offset: number): boolean {
    const pos = this.#pos;
    if (pos + DirentPlus.SIZE > this.#end) return false;
    const next = putDirent(
      this.#bytes,
      this.#view,
      pos + DirentPlus.dirent,
      this.#end,
      name,
      entry.attr.ino,
      entry.attr.mode,
      offset,
    );
    if (next < 0) return false;
    encodeEntry(
      this.#view,
      pos + DirentPlus.entry_out,
      entry,
      this.#entryTimeout,
      this.#attrTimeout,
    );
    this.#pos = next;
    return true;
  }

  /** Bytes used so far. */
  get length(): number {
    return this.#pos - this.#start;
  }
}
