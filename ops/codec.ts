/**
 * Encoding of reply structs into transport memory (and decoding of
 * `fuse_setattr_in`, the one request struct with optional fields), and the little-endian
 * 64-bit helpers that keep node ids, offsets and sizes as plain numbers.
 *
 * @module
 */

import {
  Attr as AttrLayout,
  AttrOut,
  EntryOut,
  FATTR,
  FOPEN,
  OpenOut,
  SetattrIn,
  StatfsOut,
  StatxOut,
  WriteOut,
} from "./abi.ts";
import type { Attr, Entry, OpenReply, SetAttr, StatFs } from "./records.ts";

const TWO_32 = 4294967296;

/** Read a u64 as a number (exact below 2^53, which node ids and sizes are). */
export function getU64(view: DataView, offset: number): number {
  return view.getUint32(offset, true) +
    view.getUint32(offset + 4, true) * TWO_32;
}

/** Write a number as a 64-bit two's-complement little-endian integer. */
export function setU64(view: DataView, offset: number, n: number): void {
  view.setUint32(offset, n >>> 0, true);
  view.setUint32(offset + 4, Math.floor(n / TWO_32) >>> 0, true);
}

/** Seconds (possibly fractional) as the (sec, nsec) pair FUSE timeouts use. */
function setTimeout64(
  view: DataView,
  secOffset: number,
  nsecOffset: number,
  seconds: number,
): void {
  const sec = Math.floor(seconds);
  setU64(view, secOffset, sec);
  view.setUint32(nsecOffset, Math.round((seconds - sec) * 1e9), true);
}

/** Encode `struct fuse_attr` at `o`. */
export function encodeAttr(view: DataView, o: number, a: Attr): void {
  setU64(view, o + AttrLayout.ino, a.ino);
  setU64(view, o + AttrLayout.size, a.size ?? 0);
  setU64(view, o + AttrLayout.blocks, a.blocks ?? 0);
  setU64(view, o + AttrLayout.atime, a.atimeSec ?? 0);
  setU64(view, o + AttrLayout.mtime, a.mtimeSec ?? 0);
  setU64(view, o + AttrLayout.ctime, a.ctimeSec ?? 0);
  view.setUint32(o + AttrLayout.atimensec, a.atimeNsec ?? 0, true);
  view.setUint32(o + AttrLayout.mtimensec, a.mtimeNsec ?? 0, true);
  view.setUint32(o + AttrLayout.ctimensec, a.ctimeNsec ?? 0, true);
  view.setUint32(o + AttrLayout.mode, a.mode, true);
  view.setUint32(o + AttrLayout.nlink, a.nlink ?? 1, true);
  view.setUint32(o + AttrLayout.uid, a.uid ?? 0, true);
  view.setUint32(o + AttrLayout.gid, a.gid ?? 0, true);
  view.setUint32(o + AttrLayout.rdev, a.rdev ?? 0, true);
  view.setUint32(o + AttrLayout.blksize, a.blksize ?? 4096, true);
  view.setUint32(o + AttrLayout.flags, 0, true);
}

/** Encode `struct fuse_entry_out` at `o`; returns its size. */
export function encodeEntry(
  view: DataView,
  o: number,
  e: Entry,
  entryTimeout: number,
  attrTimeout: number,
): number {
  setU64(view, o + EntryOut.nodeid, e.nodeId);
  setU64(view, o + EntryOut.generation, e.generation ?? 0);
  setTimeout64(
    view,
    o + EntryOut.entry_valid,
    o + EntryOut.entry_valid_nsec,
    e.entryTimeout ?? entryTimeout,
  );
  setTimeout64(
    view,
    o + EntryOut.attr_valid,
    o + EntryOut.attr_valid_nsec,
    e.attrTimeout ?? attrTimeout,
  );
  encodeAttr(view, o + EntryOut.attr, e.attr);
  return EntryOut.SIZE;
}

/** Encode `struct fuse_attr_out` at `o`; returns its size. */
/**
 * `fuse_statx_out` from a Linux `struct statx` (the first 256 bytes of
 * `stx`, copied as they are: `fuse_statx` has the same layout).
 */
export function encodeStatxOut(
  view: DataView,
  bytes: Uint8Array,
  o: number,
  stx: Uint8Array,
  attrTimeout: number,
): number {
  bytes.fill(0, o, o + StatxOut.SIZE);
  setTimeout64(view, o + StatxOut.attr_valid, o + StatxOut.attr_valid_nsec, attrTimeout);
  bytes.set(stx.subarray(0, StatxOut.SIZE - StatxOut.stat), o + StatxOut.stat);
  return StatxOut.SIZE;
}

/** `fuse_attr_out` for `a`, valid for `attrTimeout` seconds. */
export function encodeAttrOut(
  view: DataView,
  o: number,
  a: Attr,
  attrTimeout: number,
): number {
  setTimeout64(
    view,
    o + AttrOut.attr_valid,
    o + AttrOut.attr_valid_nsec,
    attrTimeout,
  );
  view.setUint32(o + AttrOut.attr_valid_nsec + 4, 0, true);
  encodeAttr(view, o + AttrOut.attr, a);
  return AttrOut.SIZE;
}

/** The `open_flags` bits for an {@linkcode OpenReply}. */
export function openFlags(r: OpenReply): number {
  return (r.directIo ? FOPEN.DIRECT_IO : 0) |
    (r.keepCache ? FOPEN.KEEP_CACHE : 0) |
    (r.nonSeekable ? FOPEN.NONSEEKABLE : 0) |
    (r.stream ? FOPEN.STREAM : 0) |
    (r.cacheDir ? FOPEN.CACHE_DIR : 0) |
    (r.noFlush ? FOPEN.NOFLUSH : 0) |
    (r.parallelDirectWrites ? FOPEN.PARALLEL_DIRECT_WRITES : 0);
}

/**
 * Encode `struct fuse_open_out` at `o`; returns its size. A `backingId`
 * (kernel passthrough) sets FOPEN_PASSTHROUGH; `transportFlags` are the
 * transport's own (FOPEN_IO_URING_ZERO_COPY).
 */
export function encodeOpen(
  view: DataView,
  o: number,
  r: OpenReply,
  backingId?: number,
  transportFlags = 0,
): number {
  setU64(view, o + OpenOut.fh, r.fh ?? 0);
  const passthrough = backingId ? FOPEN.PASSTHROUGH : 0;
  view.setUint32(o + OpenOut.open_flags, openFlags(r) | passthrough | transportFlags, true);
  view.setUint32(o + OpenOut.backing_id, backingId ?? 0, true);
  return OpenOut.SIZE;
}

/** Encode `struct fuse_statfs_out` at `o`; returns its size. */
export function encodeStatfs(view: DataView, o: number, s: StatFs): number {
  setU64(view, o + StatfsOut.blocks, s.blocks ?? 0);
  setU64(view, o + StatfsOut.bfree, s.bfree ?? 0);
  setU64(view, o + StatfsOut.bavail, s.bavail ?? 0);
  setU64(view, o + StatfsOut.files, s.files ?? 0);
  setU64(view, o + StatfsOut.ffree, s.ffree ?? 0);
  view.setUint32(o + StatfsOut.bsize, s.bsize ?? 512, true);
  view.setUint32(o + StatfsOut.namelen, s.namelen ?? 255, true);
  view.setUint32(o + StatfsOut.frsize, s.frsize ?? s.bsize ?? 512, true);
  for (let i = 52; i < StatfsOut.SIZE; i += 4) view.setUint32(o + i, 0, true);
  return StatfsOut.SIZE;
}

/** Encode the `fuse_write_out` of a WRITE that wrote `n` bytes at `o` of `v`; its length. */
export function encodeWriteOut(v: DataView, o: number, n: number): number {
  v.setUint32(o + WriteOut.size, n, true);
  v.setUint32(o + 4, 0, true); // padding
  return WriteOut.SIZE;
}

/** Decode `fuse_setattr_in` into a {@linkcode SetAttr}. */
export function decodeSetattr(a: DataView, ao: number): SetAttr {
  const valid = a.getUint32(ao + SetattrIn.valid, true);
  const s: SetAttr = {};
  if (valid & FATTR.MODE) s.mode = a.getUint32(ao + SetattrIn.mode, true);
  if (valid & FATTR.UID) s.uid = a.getUint32(ao + SetattrIn.uid, true);
  if (valid & FATTR.GID) s.gid = a.getUint32(ao + SetattrIn.gid, true);
  if (valid & FATTR.SIZE) s.size = getU64(a, ao + SetattrIn.size);
  if (valid & FATTR.FH) s.fh = getU64(a, ao + SetattrIn.fh);
  if (valid & FATTR.ATIME_NOW) s.atime = "now";
  else if (valid & FATTR.ATIME) {
    s.atime = {
      sec: Number(a.getBigInt64(ao + SetattrIn.atime, true)),
      nsec: a.getUint32(ao + SetattrIn.atimensec, true),
    };
  }
  if (valid & FATTR.MTIME_NOW) s.mtime = "now";
  else if (valid & FATTR.MTIME) {
    s.mtime = {
      sec: Number(a.getBigInt64(ao + SetattrIn.mtime, true)),
      nsec: a.getUint32(ao + SetattrIn.mtimensec, true),
    };
  }
  if (valid & FATTR.CTIME) {
    s.ctime = {
      sec: Number(a.getBigInt64(ao + SetattrIn.ctime, true)),
      nsec: a.getUint32(ao + SetattrIn.ctimensec, true),
    };
  }
  if (valid & FATTR.KILL_SUIDGID) s.killSuidgid = true;
  return s;
}
