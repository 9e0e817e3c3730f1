/**
 * setattr for the passthrough: apply the changes a SETATTR asks for to a
 * backing inode, through its O_PATH fd (or the open file it came through).
 *
 * @module
 */

import { AT, check, clearSuidSgid, close, libc, O } from "../ffi/libc.ts";
import type { RequestContext, SetAttr } from "../ops/filesystem.ts";
import { EMPTY, NOFOLLOW_EMPTY, procPath } from "./source_inodes.ts";

const UTIME_NOW = (1 << 30) - 1;
const UTIME_OMIT = (1 << 30) - 2;

/**
 * Apply `c` to the inode held as `fd` (an O_PATH fd), or, where `c.fh` is
 * set (an fd by now), to that open file: mode, owner, size, then the
 * setuid/setgid bits the kernel asks to clear, then the times.
 */
export async function setAttributes(ctx: RequestContext, fd: number, c: SetAttr): Promise<void> {
  const path = procPath(fd);
  if (c.mode !== undefined) {
    if (c.fh !== undefined) check(libc.fchmod(c.fh, c.mode & 0o7777), "fchmod");
    else check(libc.fchmodat(AT.FDCWD, path, c.mode & 0o7777, 0), "fchmodat");
  }
  if (c.uid !== undefined || c.gid !== undefined) {
    check(
      libc.fchownat(fd, EMPTY, c.uid ?? 0xffffffff, c.gid ?? 0xffffffff, NOFOLLOW_EMPTY),
      "fchownat",
    );
  }
  if (c.size !== undefined) {
    if (c.fh !== undefined) await ctx.io.ftruncate(c.fh, c.size);
    else {
      const fd = await ctx.io.openat(AT.FDCWD, path, O.WRONLY | O.CLOEXEC, 0);
      try {
        await ctx.io.ftruncate(fd, c.size);
      } finally {
        close(fd);
      }
    }
  }
  // The kernel asks (chown, or truncate by a caller without CAP_FSETID);
  // a root server's own fchownat/ftruncate would keep the bits.
  if (c.killSuidgid && c.mode === undefined) clearSuidSgid(c.fh ?? fd, ctx.gid);
  if (c.atime !== undefined || c.mtime !== undefined) {
    const ts = new Uint8Array(32);
    const v = new DataView(ts.buffer);
    const put = (o: number, t: SetAttr["atime"]) => {
      if (t === undefined) v.setBigInt64(o + 8, BigInt(UTIME_OMIT), true);
      else if (t === "now") v.setBigInt64(o + 8, BigInt(UTIME_NOW), true);
      else {
        v.setBigInt64(o, BigInt(t.sec), true);
        v.setBigInt64(o + 8, BigInt(t.nsec), true);
      }
    };
    put(0, c.atime);
    put(16, c.mtime);
    // The magic link resolves to the inode itself, also a symlink's (a
    // jump through /proc is never followed further), so links get times too.
    if (c.fh !== undefined) check(libc.futimens(c.fh, ts), "futimens");
    else check(libc.utimensat(AT.FDCWD, path, ts, 0), "utimensat");
  }
}
