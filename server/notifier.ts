/**
 * Notifications: the server telling the kernel that something changed
 * behind its caches (libfuse's `fuse_lowlevel_notify_*`). A file system
 * whose content changes on its own (a clock, a network share, a database)
 * calls these so that clients see the change despite cached attributes,
 * names and pages.
 *
 * Each is one write of an out header with `unique` 0 and the notification
 * code to `/dev/fuse`, whichever transport serves requests. The write is
 * synchronous and the kernel may wait in it (invalidating pages waits for
 * their locks), so do not notify from inside a method serving a request on
 * the same inode; notify from a timer or after the reply.
 *
 * @module
 */

import { Errno, SystemError } from "../ffi/errno.ts";
import { errno, libc } from "../ffi/libc.ts";
import {
  NotifyCode,
  NotifyDeleteOut,
  NotifyInvalEntryOut,
  NotifyInvalInodeOut,
  NotifyRetrieveOut,
  NotifyStoreOut,
  OutHeader,
} from "../ops/abi.ts";
import { setU64 } from "../ops/codec.ts";
import type { Dispatcher } from "../ops/dispatch.ts";

const encoder = new TextEncoder();

/** Sends notifications on one session's connection. Get it as `session.notify`. */
export class Notifier {
  #fd: number;
  #dispatcher: Dispatcher;
  #closed = false;

  /**
   * @internal Why {@linkcode retrieve} cannot work on this session: the
   * kernel's NOTIFY_REPLY goes to whichever serving thread reads it, and
   * with a FileSystem in every thread (`perQueue`) that thread's
   * dispatcher did not ask.
   */
  retrieveUnavailable: string | null = null;

  /** @internal Made by the session. */
  constructor(fuseFd: number, dispatcher: Dispatcher) {
    this.#fd = fuseFd;
    this.#dispatcher = dispatcher;
  }

  /**
   * Drop the kernel's cached attributes of `nodeId` and its cached pages
   * from `offset`, `length` bytes (0: to the end; a negative `offset`: the
   * attributes only). False if the kernel does not know the node.
   */
  invalInode(nodeId: number, offset?: number, length?: number): boolean {
    offset ??= 0;
    length ??= 0;
    const a = new DataView(new ArrayBuffer(NotifyInvalInodeOut.SIZE));
    setU64(a, NotifyInvalInodeOut.ino, nodeId);
    a.setBigInt64(NotifyInvalInodeOut.off, BigInt(offset), true);
    a.setBigInt64(NotifyInvalInodeOut.len, BigInt(length), true);
    return this.#send(NotifyCode.INVAL_INODE, new Uint8Array(a.buffer));
  }

  /**
   * Drop the kernel's cached name `name` in directory `parent` (a lookup
   * follows the next time it is used). False if it was not cached.
   */
  invalEntry(parent: number, name: string): boolean {
    const bytes = encoder.encode(name);
    const a = new DataView(new ArrayBuffer(NotifyInvalEntryOut.SIZE));
    setU64(a, NotifyInvalEntryOut.parent, parent);
    a.setUint32(NotifyInvalEntryOut.namelen, bytes.length, true);
    return this.#send(NotifyCode.INVAL_ENTRY, new Uint8Array(a.buffer), bytes, new Uint8Array(1));
  }

  /**
   * Tell the kernel that `name` in `parent`, which was node `child`, is
   * gone: like {@linkcode invalEntry}, and it also ends what the kernel
   * holds of `child` under that name (an inotify watcher sees the delete).
   * False if it was not cached.
   */
  delete(parent: number, child: number, name: string): boolean {
    const bytes = encoder.encode(name);
    const a = new DataView(new ArrayBuffer(NotifyDeleteOut.SIZE));
    setU64(a, NotifyDeleteOut.parent, parent);
    setU64(a, NotifyDeleteOut.child, child);
    a.setUint32(NotifyDeleteOut.namelen, bytes.length, true);
    return this.#send(NotifyCode.DELETE, new Uint8Array(a.buffer), bytes, new Uint8Array(1));
  }

  /**
   * Put `data` into the kernel's page cache of `nodeId` at `offset` (and
   * extend its cached size to cover it), so that reads find it without a
   * READ. False if the kernel does not know the node.
   */
  store(nodeId: number, offset: number, data: Uint8Array): boolean {
    const a = new DataView(new ArrayBuffer(NotifyStoreOut.SIZE));
    setU64(a, NotifyStoreOut.nodeid, nodeId);
    setU64(a, NotifyStoreOut.offset, offset);
    a.setUint32(NotifyStoreOut.size, data.length, true);
    return this.#send(NotifyCode.STORE, new Uint8Array(a.buffer), data);
  }

  /**
   * Ask the kernel for up to `size` bytes of `nodeId`'s page cache from
   * `offset`: resolves with what it has cached there (possibly nothing),
   * or rejects after `timeoutMs` if no answer came (the kernel answers with
   * a NOTIFY_REPLY request; queue threads and /dev/fuse threads hand it to
   * the session's thread, whose dispatcher asked). With a FileSystem in
   * every serving thread (`perQueue`, more than one thread) the reply would
   * reach a thread that did not ask: then it rejects at once (EOPNOTSUPP).
   */
  retrieve(
    nodeId: number,
    offset: number,
    size: number,
    timeoutMs?: number,
  ): Promise<Uint8Array> {
    timeoutMs ??= 5000;
    if (this.retrieveUnavailable) {
      const why = `not available: ${this.retrieveUnavailable}; mount with threads: 1`;
      return Promise.reject(new SystemError("notify retrieve", Errno.EOPNOTSUPP, why));
    }
    const [unique, reply] = this.#dispatcher.expectNotifyReply(timeoutMs);
    const a = new DataView(new ArrayBuffer(NotifyRetrieveOut.SIZE));
    setU64(a, NotifyRetrieveOut.notify_unique, unique);
    setU64(a, NotifyRetrieveOut.nodeid, nodeId);
    setU64(a, NotifyRetrieveOut.offset, offset);
    a.setUint32(NotifyRetrieveOut.size, size, true);
    if (!this.#send(NotifyCode.RETRIEVE, new Uint8Array(a.buffer))) {
      this.#dispatcher.cancelNotifyReply(unique);
      return Promise.reject(new SystemError("notify retrieve", Errno.ENOENT, `node ${nodeId}`));
    }
    return reply;
  }

  /** @internal The session has ended: notifications fail with ENOTCONN. */
  close(): void {
    this.#closed = true;
  }

  #send(code: number, ...parts: Uint8Array[]): boolean {
    if (this.#closed) throw new SystemError("notify", Errno.ENOTCONN, "the session has ended");
    const length = OutHeader.SIZE + parts.reduce((n, p) => n + p.length, 0);
    const message = new Uint8Array(length);
    const h = new DataView(message.buffer);
    h.setUint32(OutHeader.len, length, true);
    h.setInt32(OutHeader.error, code, true); // unique stays 0: a notification
    let at = OutHeader.SIZE;
    for (const p of parts) {
      message.set(p, at);
      at += p.length;
    }
    const n = libc.write(this.#fd, Deno.UnsafePointer.of(message), BigInt(length));
    if (n === length) return true;
    const e = errno();
    if (e === Errno.ENOENT) return false; // the kernel has no such node or name cached
    throw new SystemError("notify", e, `code ${code}`);
  }
}
