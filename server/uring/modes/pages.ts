/**
 * The client's own pages as fixed buffer `id` (the zero-copy modes): what
 * the CPU must read or write of them goes through the entry's staging slot,
 * a memfd page, with READ_FIXED / WRITE_FIXED between that memfd and the
 * pages, so the server never maps them.
 *
 * @module
 */

import { Errno, SystemError } from "../../../ffi/errno.ts";
import { QueueCounter } from "../counters.ts";
import type { UringEntry } from "../entry.ts";
import { type ModeContext, useOwnSlot } from "./mode.ts";

/**
 * Move the write data in the client's pages (`size` bytes of payload, of
 * which the first `lead` are already in the staging slot) into the entry's
 * staging slot with WRITE_FIXED into the memfd, and point the request's
 * data there.
 */
export function stagePagesIn(
  c: ModeContext,
  entry: UringEntry,
  size: number,
  lead: number,
): Promise<void> {
  c.count(entry, QueueCounter.staged);
  const length = Math.min(size, c.memory.slotSize) - lead;
  const staged = () => {
    entry.dataStaged = true;
    useOwnSlot(c, entry, true, false);
  };
  if (length <= 0) return Promise.resolve(staged());
  c.add(entry, QueueCounter.bytesThroughServer, length);
  const fd = c.memory.payloadsFd;
  return c.fixed(false, fd, 0n, length, entry.ownOffset + lead, entry.id).then((n) => {
    if (n !== length) throw new SystemError("staging write data", Errno.EIO);
    staged();
  });
}

/**
 * Move a reply of `length` bytes that the FileSystem wrote into the
 * staging slot into the client's pages (READ_FIXED from the memfd), unless
 * the reply is not bound for them or a backing-fd read put it there
 * already (then null); resolves with whether it all went.
 */
export function stagePagesOut(
  c: ModeContext,
  entry: UringEntry,
  length: number,
): Promise<boolean> | null {
  if (entry.pages !== "out" || entry.replyInPages) return null;
  c.count(entry, QueueCounter.staged);
  c.add(entry, QueueCounter.bytesThroughServer, length);
  return c.fixed(true, c.memory.payloadsFd, 0n, length, entry.ownOffset, entry.id)
    .then((n) => n === length, () => false);
}

/**
 * Move `length` bytes between backing `fd` at `offset` and the client's
 * pages (READ_FIXED into them for a READ, WRITE_FIXED from them for a
 * WRITE), if that is where this request's data is; else null.
 */
export function transferPages(
  c: ModeContext,
  entry: UringEntry,
  read: boolean,
  fd: number,
  offset: number,
  length: number,
): Promise<number> | null {
  const inPages = read ? entry.pages === "out" : entry.pages === "in" && !entry.dataStaged;
  if (!inPages) return null;
  c.count(entry, read ? QueueCounter.zeroCopyReads : QueueCounter.zeroCopyWrites);
  c.add(entry, QueueCounter.bytesZeroCopy, length);
  if (read) entry.replyInPages = true;
  return c.fixed(read, fd, 0n, length, offset, entry.id);
}
