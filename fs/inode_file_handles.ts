/**
 * File handles of inodes, for a passthrough that cannot hold an fd per
 * inode: past its fd budget a node keeps the handle `name_to_handle_at`
 * gives, and `open_by_handle_at` (which needs CAP_DAC_READ_SEARCH) reopens
 * it for the one call that needs it. virtiofsd does the same for large
 * trees. Kept in shared memory by node slot, so every serving thread of a
 * mount can reopen any node.
 *
 * @module
 */

import { AT, libc } from "../ffi/libc.ts";
import { SLOT_BITS } from "./shared_inodes.ts";

/** Bytes of `f_handle` kept per node: enough for ext4, tmpfs, xfs and btrfs handles. */
const MAX_HANDLE_BYTES = 32;
/** A record: `struct file_handle` (handle_bytes, handle_type, f_handle). */
const RECORD = 8 + MAX_HANDLE_BYTES;
const SLOTS = 1 << SLOT_BITS;
const EMPTY_PATH = new Uint8Array(1);

/** A `struct file_handle` of an fd, and the mount id it belongs to. */
export interface FileHandle {
  /** The `struct file_handle`, as `open_by_handle_at` takes it. */
  bytes: Uint8Array<ArrayBuffer>;
  /** The mount it is valid on. */
  mountId: number;
}

/**
 * The file handle of `fd`, or null if its file system gives none, it is
 * longer than kept here, or (with `mountId`) it lies on another mount.
 */
export function fileHandleOf(fd: number, mountId?: number): FileHandle | null {
  const bytes = new Uint8Array(RECORD);
  new DataView(bytes.buffer).setUint32(0, MAX_HANDLE_BYTES, true);
  const mount = new Int32Array(1);
  const ok = libc.name_to_handle_at(
    fd,
    EMPTY_PATH,
    bytes,
    new Uint8Array(mount.buffer),
    AT.EMPTY_PATH,
  ) === 0;
  if (!ok || (mountId !== undefined && mount[0] !== mountId)) return null;
  return { bytes, mountId: mount[0] };
}

/** Node slot → file handle, shared by a mount's threads. */
export class InodeFileHandles {
  /** The shared memory (reserved up front; pages are committed as slots are used). */
  readonly buffer: SharedArrayBuffer;
  readonly #bytes: Uint8Array;
  readonly #count: Int32Array;

  /** A new store, or a view of another thread's `buffer`. */
  constructor(buffer?: SharedArrayBuffer) {
    this.buffer = buffer ?? new SharedArrayBuffer(8 + SLOTS * RECORD);
    this.#count = new Int32Array(this.buffer, 0, 2);
    this.#bytes = new Uint8Array(this.buffer, 8);
  }

  /** Nodes kept as handles now. */
  get count(): number {
    return Atomics.load(this.#count, 0);
  }

  /** Keep `handle` for slot `slot` (a node just added, not yet known to the kernel). */
  store(slot: number, handle: FileHandle): void {
    this.#bytes.set(handle.bytes, slot * RECORD);
    Atomics.add(this.#count, 0, 1);
  }

  /** The `struct file_handle` of slot `slot`. */
  load(slot: number): Uint8Array<ArrayBuffer> {
    return this.#bytes.slice(slot * RECORD, (slot + 1) * RECORD);
  }

  /** Slot `slot`'s node is gone. */
  clear(slot: number): void {
    this.#bytes.fill(0, slot * RECORD, (slot + 1) * RECORD);
    Atomics.sub(this.#count, 0, 1);
  }
}
