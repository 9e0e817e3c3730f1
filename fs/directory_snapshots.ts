/**
 * The passthrough's open directories, as this thread sees them: a snapshot
 * of each one's entries, read with getdents64 when a pass starts at offset
 * 0 and served by index after, so that offsets stay stable while the
 * directory changes.
 *
 * @module
 */

import { check, check64, libc } from "../ffi/libc.ts";

const decoder = new TextDecoder();

/**
 * getdents64's buffer, one per thread: each pass decodes it before the
 * next call, so no request needs a 64 KiB buffer of its own.
 */
const dirents = new Uint8Array(65536);
const direntView = new DataView(dirents.buffer);

/** One entry of a directory, as getdents64 gives it. */
export interface DirectoryEntry {
  /** Its name. */
  name: string;
  /** Its inode number. */
  ino: number;
  /** Its type, as mode bits (S_IFDIR, ...). */
  type: number;
}

/** An open directory: a snapshot of its entries, served by index. */
interface DirHandle {
  fd: number;
  entries: DirectoryEntry[] | null;
}

/** Snapshots of the open directories of this thread, by handle. */
export class DirectorySnapshots {
  #dirs = new Map<number, DirHandle>();

  /**
   * The entries of the directory open as handle `fh` on `fd`, read once per
   * pass from offset 0 (getdents64).
   */
  entries(fh: number, fd: number, offset: number): DirectoryEntry[] {
    let dir = this.#dirs.get(fh);
    if (!dir) {
      dir = { fd, entries: null };
      this.#dirs.set(fh, dir);
      // Snapshots of handles released through another thread are never
      // used again: keep only the most recent.
      if (this.#dirs.size > 256) this.#dirs.delete(this.#dirs.keys().next().value!);
    }
    if (dir.entries && offset !== 0) return dir.entries;
    check64(libc.lseek(dir.fd, 0n, 0), "lseek");
    const entries: DirectoryEntry[] = [];
    const ptr = Deno.UnsafePointer.of(dirents);
    for (;;) {
      const n = check(libc.getdents64(dir.fd, ptr, BigInt(dirents.length)), "getdents64");
      if (n === 0) break;
      for (let at = 0; at < n;) {
        const reclen = direntView.getUint16(at + 16, true);
        const end = dirents.indexOf(0, at + 19);
        entries.push({
          ino: Number(direntView.getBigUint64(at, true)),
          type: dirents[at + 18] << 12,
          name: decoder.decode(dirents.subarray(at + 19, end)),
        });
        at += reclen;
      }
    }
    dir.entries = entries;
    return entries;
  }

  /** Forget handle `fh` (released). */
  delete(fh: number): void {
    this.#dirs.delete(fh);
  }

  /** Forget every handle. */
  clear(): void {
    this.#dirs.clear();
  }
}
