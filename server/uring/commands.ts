/**
 * The FUSE-over-io_uring commands and the reply header, in one place for
 * every thread that serves a queue: REGISTER hands an entry's header and
 * payload buffers to the kernel, COMMIT_AND_FETCH sends the reply held in
 * them and asks for the next request, and on 7.46 kernels ADD_QUEUE and
 * ADD_BUFPOOL make a queue that takes payloads from a buffer pool.
 *
 * An entry's header buffer (`struct fuse_uring_req_header`) carries the
 * in header on the way in and the out header on the way out; both keep
 * `unique` at offset 8, so a reply only writes its length and error.
 *
 * @module
 */

import type { Ring } from "../../ffi/ring.ts";
import { prepUringCmd } from "../../ffi/sqe.ts";
import { IORING_URING_CMD_FIXED, Sqe } from "../../ffi/uring_abi.ts";
import {
  OutHeader,
  UringCmd,
  UringCmdReq,
  UringEntInOut,
  UringPoolCmd,
  UringPoolCmdReq,
  UringReqHeader,
} from "../../ops/abi.ts";

const ENT = UringReqHeader.ring_ent_in_out;

/**
 * Write the reply's out header (length, error; `unique` is already in
 * place from the request) and the payload size into the header buffer at `o`.
 */
export function writeUringReply(h: DataView, o: number, error: number, length: number): void {
  h.setUint32(o + OutHeader.len, OutHeader.SIZE + length, true);
  h.setInt32(o + OutHeader.error, error, true);
  h.setUint32(o + ENT + UringEntInOut.payload_sz, length, true);
}

/** The payload size the kernel wrote for a request (names, write data). */
export function uringPayloadSize(h: DataView, o: number): number {
  return h.getUint32(o + ENT + UringEntInOut.payload_sz, true);
}

/**
 * Prepare REGISTER of one entry for queue `qid`: `iovecs` points at two
 * struct iovec (header buffer, payload buffer).
 */
export function prepRegister(ring: Ring, fuseFd: number, iovecs: bigint, qid: number): number {
  const s = ring.sqes;
  const at = ring.sqe();
  prepUringCmd(s, at, fuseFd, UringCmd.REGISTER);
  s.setBigUint64(at + Sqe.addr, iovecs, true);
  s.setUint32(at + Sqe.len, 2, true);
  s.setUint16(at + Sqe.cmd + UringCmdReq.qid, qid, true);
  return at;
}

/**
 * Prepare REGISTER of entry `slot` for queue `qid` on a kernel with the
 * buffer-ring series: no iovecs; the entry's header is `slot`'s in the
 * ring's fixed header buffer, its payloads come from the kernel-managed
 * buffer ring, and with zero-copy its data pages go into fixed-buffer slot
 * `slot` of a table of `queueDepth` (`initFlags`: FUSE_URING_BUF_RING,
 * FUSE_URING_ZERO_COPY).
 */
export function prepRegisterBufRing(
  ring: Ring,
  fuseFd: number,
  slot: number,
  qid: number,
  initFlags: number,
  queueDepth: number,
): number {
  const s = ring.sqes;
  const at = ring.sqe();
  prepUringCmd(s, at, fuseFd, UringCmd.REGISTER);
  s.setUint16(at + Sqe.bufIndex, slot, true);
  s.setUint16(at + Sqe.cmd + UringCmdReq.qid, qid, true);
  s.setUint16(at + Sqe.cmd + UringCmdReq.init_flags, initFlags, true);
  s.setUint16(at + Sqe.cmd + UringCmdReq.init_queue_depth, queueDepth, true);
  return at;
}

/**
 * Mark the command at `at` as using fixed buffer `slot` of the ring (a
 * registered buffer pool): the kernel reaches the pool through it, and
 * refuses REGISTER and COMMIT_AND_FETCH on a pool queue without it.
 */
export function useFixedBuffer(s: DataView, at: number, slot: number): void {
  s.setUint32(at + Sqe.opFlags, IORING_URING_CMD_FIXED, true);
  s.setUint16(at + Sqe.bufIndex, slot, true);
}

/** Prepare ADD_QUEUE of queue `qid` (7.46; `flags`: FUSE_URING_POOL_ZERO_COPY). */
export function prepAddQueue(ring: Ring, fuseFd: number, qid: number, flags: number): number {
  const s = ring.sqes;
  const at = ring.sqe();
  prepUringCmd(s, at, fuseFd, UringPoolCmd.ADD_QUEUE);
  s.setBigUint64(at + Sqe.cmd + UringPoolCmdReq.flags, BigInt(flags), true);
  s.setUint16(at + Sqe.cmd + UringPoolCmdReq.qid, qid, true);
  return at;
}

/**
 * Prepare ADD_BUFPOOL for queue `qid`: `length` bytes at `address`, which
 * the ring holds as fixed buffer `slot`. The kernel cuts them into buffers
 * of its maximum payload size.
 */
export function prepAddBufPool(
  ring: Ring,
  fuseFd: number,
  qid: number,
  address: bigint,
  length: number,
  slot: number,
): number {
  const s = ring.sqes;
  const at = ring.sqe();
  prepUringCmd(s, at, fuseFd, UringPoolCmd.ADD_BUFPOOL);
  s.setUint16(at + Sqe.cmd + UringPoolCmdReq.qid, qid, true);
  s.setBigUint64(at + Sqe.cmd + UringPoolCmdReq.bufpool_uaddr, address, true);
  s.setUint32(at + Sqe.cmd + UringPoolCmdReq.bufpool_len, length, true);
  useFixedBuffer(s, at, slot);
  return at;
}

/**
 * Prepare REGISTER of an entry of pool queue `qid`: `iovecs` points at two
 * struct iovec, the header buffer and an empty payload (the pool gives
 * payloads); `zeroCopySlot` is where the kernel installs the client's
 * pages (a zero-copy queue), or -1.
 */
export function prepRegisterPooled(
  ring: Ring,
  fuseFd: number,
  iovecs: bigint,
  qid: number,
  poolSlot: number,
  zeroCopySlot: number,
): number {
  const at = prepRegister(ring, fuseFd, iovecs, qid);
  const s = ring.sqes;
  useFixedBuffer(s, at, poolSlot);
  if (zeroCopySlot >= 0) {
    s.setUint32(at + Sqe.cmd + UringPoolCmdReq.ent_zero_copy_buf_index, zeroCopySlot, true);
  }
  return at;
}

/**
 * Prepare COMMIT_AND_FETCH of the reply in the header buffer at `o` (see
 * {@linkcode writeUringReply}) for queue `qid`, through the queue's pool in
 * fixed buffer `poolSlot` if it has one; returns the SQE's offset.
 */
export function prepCommit(
  ring: Ring,
  fuseFd: number,
  h: DataView,
  o: number,
  qid: number,
  poolSlot = -1,
): number {
  const s = ring.sqes;
  const at = ring.sqe();
  prepUringCmd(s, at, fuseFd, UringCmd.COMMIT_AND_FETCH);
  if (poolSlot >= 0) useFixedBuffer(s, at, poolSlot);
  // commit_id is an opaque u64: copy it as two halves, no bigint per request.
  const id = o + ENT + UringEntInOut.commit_id;
  s.setUint32(at + Sqe.cmd + UringCmdReq.commit_id, h.getUint32(id, true), true);
  s.setUint32(at + Sqe.cmd + UringCmdReq.commit_id + 4, h.getUint32(id + 4, true), true);
  s.setUint16(at + Sqe.cmd + UringCmdReq.qid, qid, true);
  return at;
}
