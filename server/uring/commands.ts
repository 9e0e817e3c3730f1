/**
 * The two FUSE-over-io_uring commands and the reply header, in one place
 * for every thread that serves a queue: REGISTER hands an entry's header
 * and payload buffers to the kernel, COMMIT_AND_FETCH sends the reply held
 * in them and asks for the next request.
 *
 * An entry's header buffer (`struct fuse_uring_req_header`) carries the
 * in header on the way in and the out header on the way out; both keep
 * `unique` at offset 8, so a reply only writes its length and error.
 *
 * @module
 */

import type { Ring } from "../../ffi/ring.ts";
import { prepUringCmd } from "../../ffi/sqe.ts";
import { Sqe } from "../../ffi/uring_abi.ts";
import { OutHeader, UringCmd, UringCmdReq, UringEntInOut, UringReqHeader } from "../../ops/abi.ts";

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
 * Prepare COMMIT_AND_FETCH of the reply in the header buffer at `o` (see
 * {@linkcode writeUringReply}) for queue `qid`; returns the SQE's offset.
 */
export function prepCommit(
  ring: Ring,
  fuseFd: number,
  h: DataView,
  o: number,
  qid: number,
): number {
  const s = ring.sqes;
  const at = ring.sqe();
  prepUringCmd(s, at, fuseFd, UringCmd.COMMIT_AND_FETCH);
  // commit_id is an opaque u64: copy it as two halves, no bigint per request.
  const id = o + ENT + UringEntInOut.commit_id;
  s.setUint32(at + Sqe.cmd + UringCmdReq.commit_id, h.getUint32(id, true), true);
  s.setUint32(at + Sqe.cmd + UringCmdReq.commit_id + 4, h.getUint32(id + 4, true), true);
  s.setUint16(at + Sqe.cmd + UringCmdReq.qid, qid, true);
  return at;
}
