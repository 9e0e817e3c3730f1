/**
 * Mounting and unmounting with raw `mount(2)` (fusermount.ts does it
 * for users who may not), and the checks that turn the usual mistakes into
 * a clear message before the kernel answers with a bare errno.
 *
 * @module
 */

import { Errno, SystemError } from "../../ffi/errno.ts";
import {
  AT,
  check,
  close,
  cstr,
  errno,
  hasCapability,
  libc,
  O,
  open,
  readSmallFile,
  S,
} from "../../ffi/libc.ts";

/** Why a mount could not be made; `message` says what to do about it. */
export class MountError extends Error {
  /** The errno behind it, when there is one. */
  readonly errno?: number;
  /**
   * A mount failure.
   * @param message what went wrong and how to fix it
   */
  constructor(message: string, errno?: number) {
    super(message);
    this.name = "MountError";
    this.errno = errno;
  }
}

/** The kernel-side options of a FUSE mount. */
export interface KernelMountOptions {
  /** The source column of /proc/mounts (default "denofuse"). */
  fsname?: string;
  /** The type shown as `fuse.<subtype>` (default "denofuse"). */
  subtype?: string;
  /** Let users other than the mounting one in (default false). */
  allowOther?: boolean;
  /** Let the kernel check permissions from the file modes (default false). */
  defaultPermissions?: boolean;
  /** Mount read-only. */
  readOnly?: boolean;
  /** Cap on the size of read requests, in bytes. */
  maxRead?: number;
}

const MS_RDONLY = 1;
const MS_NOSUID = 2;
const MS_NODEV = 4;
const MNT_DETACH = 2;
const STATX_TYPE = 1;
const STATX_MODE = 2;
const CAP_SYS_ADMIN = 21;

/** Absolute, symlink-free form of `path` (realpath(3)). */
export function realPath(path: string): string {
  const buf = new Uint8Array(4096);
  if (libc.realpath(cstr(path), buf) === null) {
    throw new SystemError("realpath", errno(), path);
  }
  return new TextDecoder().decode(buf.subarray(0, buf.indexOf(0)));
}

/** `st_mode` of `path` without following a final symlink, or a SystemError. */
export function statMode(path: string, follow = true): number {
  const buf = new Uint8Array(256);
  check(
    libc.statx(
      AT.FDCWD,
      cstr(path),
      follow ? 0 : AT.SYMLINK_NOFOLLOW,
      STATX_TYPE | STATX_MODE,
      buf,
    ),
    "statx",
    path,
  );
  return new DataView(buf.buffer).getUint16(28, true);
}

/** Whether this process may mount: root, or CAP_SYS_ADMIN in its effective set. */
export function canMount(): boolean {
  return libc.geteuid() === 0 || hasCapability(CAP_SYS_ADMIN);
}

/**
 * Check a mountpoint before mounting on it, and return its absolute path.
 * Throws a {@linkcode MountError} that names the problem and the fix.
 */
export function checkMountpoint(mountpoint: string): string {
  let mode: number;
  try {
    mode = statMode(mountpoint);
  } catch (e) {
    const err = e as SystemError;
    if (err.errno === Errno.ENOENT) {
      throw new MountError(`mountpoint ${mountpoint} does not exist`, err.errno);
    }
    if (err.errno === Errno.ENOTCONN) {
      throw new MountError(
        `mountpoint ${mountpoint} is a FUSE mount whose server has exited ` +
          `(ENOTCONN); clear it with: umount -l ${mountpoint}`,
        err.errno,
      );
    }
    throw new MountError(`mountpoint ${mountpoint}: ${err.message}`, err.errno);
  }
  if ((mode & S.IFMT) !== S.IFDIR) {
    throw new MountError(`mountpoint ${mountpoint} is not a directory`, Errno.ENOTDIR);
  }
  return realPath(mountpoint);
}

/** Open `/dev/fuse` non-blocking, with a clear error when that is not possible. */
export function openFuseDevice(): number {
  try {
    return open("/dev/fuse", O.RDWR | O.NONBLOCK);
  } catch (e) {
    const err = e as SystemError;
    if (err.errno === Errno.ENOENT || err.errno === Errno.ENODEV) {
      throw new MountError(
        "/dev/fuse is missing: load the fuse module (modprobe fuse), or run " +
          "the container with --device /dev/fuse",
        err.errno,
      );
    }
    if (err.errno === Errno.EACCES || err.errno === Errno.EPERM) {
      throw new MountError(
        "no permission to open /dev/fuse: run as root (or with CAP_SYS_ADMIN)",
        err.errno,
      );
    }
    throw new MountError(`cannot open /dev/fuse: ${err.message}`, err.errno);
  }
}

/** The `mount(2)` data string for a FUSE mount served on `fd`. */
export function mountData(
  fd: number,
  rootMode: number,
  o: KernelMountOptions,
): string {
  const parts = [
    `fd=${fd}`,
    `rootmode=${(rootMode & S.IFMT).toString(8)}`,
    `user_id=${libc.getuid()}`,
    `group_id=${libc.getgid()}`,
  ];
  if (o.allowOther) parts.push("allow_other");
  if (o.defaultPermissions) parts.push("default_permissions");
  if (o.maxRead) parts.push(`max_read=${o.maxRead}`);
  return parts.join(",");
}

/**
 * Mount a FUSE file system served on `fd` at the absolute `mountpoint`.
 * `mount()` returns at once; the kernel then sends INIT on `fd`.
 */
export function mountFuse(
  fd: number,
  mountpoint: string,
  o: KernelMountOptions,
): void {
  if (!canMount()) {
    throw new MountError(
      "mount(2) needs root or CAP_SYS_ADMIN (other users mount through fusermount3)",
      Errno.EPERM,
    );
  }
  for (const [key, value] of [["fsname", o.fsname], ["subtype", o.subtype]]) {
    if (value !== undefined && /[\s,]/.test(value)) {
      throw new MountError(`${key} must not contain spaces or commas: ${JSON.stringify(value)}`);
    }
  }
  const subtype = o.subtype ?? "denofuse";
  const flags = MS_NOSUID | MS_NODEV | (o.readOnly ? MS_RDONLY : 0);
  const data = mountData(fd, statMode(mountpoint), o);
  const ret = libc.mount(
    cstr(o.fsname ?? "denofuse"),
    cstr(mountpoint),
    cstr(subtype ? `fuse.${subtype}` : "fuse"),
    BigInt(flags),
    cstr(data),
  );
  if (ret < 0) {
    const e = errno();
    const hint = e === Errno.EPERM
      ? " (needs root or CAP_SYS_ADMIN)"
      : e === Errno.ENODEV
      ? " (the fuse file system type is not available: modprobe fuse)"
      : e === Errno.EINVAL
      ? ` (the kernel refused the options: ${data})`
      : "";
    throw new MountError(
      `mount ${mountpoint}: ${new SystemError("mount", e).code}${hint}`,
      e,
    );
  }
}

/**
 * Unmount `mountpoint`; if it is busy, detach it lazily (MNT_DETACH) so that
 * the connection still ends. Returns false if it was not mounted.
 */
export function unmountFuse(mountpoint: string): boolean {
  const path = cstr(mountpoint);
  if (libc.umount2(path, 0) === 0) return true;
  const e = errno();
  if (e === Errno.EINVAL || e === Errno.ENOENT) return false;
  if (libc.umount2(path, MNT_DETACH) === 0) return true;
  throw new SystemError("umount2", errno(), mountpoint);
}

/**
 * Unmount like {@linkcode unmountFuse}, on Deno's blocking pool rather than
 * the calling thread: unmounting can wait for the file system (writing back
 * dirty pages), and a serving thread blocked in umount2 could not answer
 * it. Resolves false if no FUSE file system was mounted there.
 */
export async function unmountFuseOffThread(mountpoint: string): Promise<boolean> {
  const path = cstr(mountpoint);
  for (const flags of [0, MNT_DETACH]) {
    if (await libc.umount2_wait(path, flags) === 0) return true;
    // errno belongs to the pool thread: ask the mount table instead.
    if (fuseConnectionAt(mountpoint) === null) return false;
  }
  throw new SystemError("umount2", Errno.EBUSY, mountpoint);
}

/** Unmounting, done the way the mount was made. */
export interface Unmounter {
  /** Unmount, blocking this thread; false if nothing was mounted there. */
  unmountSync(mountpoint: string): boolean;
  /**
   * Unmount without blocking this thread, which may have to serve requests
   * for the unmount to finish; false if nothing was mounted there.
   */
  unmount(mountpoint: string): Promise<boolean>;
}

/** Unmounting with umount2, for mounts this process made with mount(2). */
export const syscallUnmounter: Unmounter = {
  unmountSync: unmountFuse,
  unmount: unmountFuseOffThread,
};

/** A mount as /proc/self/mountinfo lists it. */
export interface MountInfo {
  /** The file system type, e.g. `fuse.denofuse`. */
  type: string;
  /** The source (FUSE: the fsname). */
  source: string;
  /** The device's minor number (FUSE: the fusectl connection number). */
  minor: string;
}

/** The topmost mount at `mountpoint` (an absolute path), or null. */
export function mountAt(mountpoint: string): MountInfo | null {
  // mountinfo escapes space, tab, newline and backslash in paths as octal.
  const escaped = mountpoint.replace(
    /[ \t\n\\]/g,
    (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, "0")}`,
  );
  let found: MountInfo | null = null;
  for (const line of readSmallFile("/proc/self/mountinfo").split("\n")) {
    const f = line.split(" ");
    if (f[4] !== escaped) continue;
    const [type = "", source = ""] = (line.split(" - ")[1] ?? "").split(" ");
    found = { type, source, minor: f[2].split(":")[1] };
  }
  return found;
}

/** The FUSE connection number (fusectl's N) mounted at `mountpoint`, or null. */
export function fuseConnectionAt(mountpoint: string): string | null {
  const m = mountAt(mountpoint);
  return m && /^fuse/.test(m.type) ? m.minor : null;
}

/**
 * Refuse to mount on a directory where the same file system (type and
 * source) is already mounted: a second mount would hide the first (the
 * kernel stacks them), which is almost always a script run twice. Another
 * file system there is only reported (`notice`), as libfuse 3 mounts over
 * anything.
 */
export function checkNotMountedTwice(
  mountpoint: string,
  o: KernelMountOptions,
  notice: (message: string) => void,
): void {
  const m = mountAt(mountpoint);
  if (!m) return;
  const subtype = o.subtype ?? "denofuse";
  const type = subtype ? `fuse.${subtype}` : "fuse";
  if (m.type === type && m.source === (o.fsname ?? "denofuse")) {
    throw new MountError(
      `${mountpoint} is already a mount of ${m.source} (${m.type}): mounting again would hide it; ` +
        `unmount it first (umount ${mountpoint}), or mount elsewhere`,
      Errno.EBUSY,
    );
  }
  notice(`mounting over ${m.source} (${m.type}) at ${mountpoint}, which it hides until unmounted`);
}

/**
 * Abort FUSE connection number `minor` (see {@linkcode fuseConnectionAt};
 * through `/sys/fs/fuse/connections/N/abort`, mounting fusectl there if
 * needed, and unmounting it again): every request waiting on it fails with
 * ENOTCONN, so no client hangs. Works also after the mount was detached
 * from the tree. False if that failed.
 */
export function abortFuseConnection(minor: string): boolean {
  const conns = "/sys/fs/fuse/connections";
  // Mounted only for this, and unmounted again: nothing is left behind.
  const mounted = !readSmallFile("/proc/self/mounts").includes(` ${conns} fusectl `) &&
    libc.mount(cstr("fusectl"), cstr(conns), cstr("fusectl"), 0n, cstr("")) === 0;
  try {
    const fd = open(`${conns}/${minor}/abort`, O.WRONLY);
    try {
      const one = cstr("1");
      return libc.write(fd, Deno.UnsafePointer.of(one), 1n) === 1;
    } finally {
      close(fd);
    }
  } catch {
    return false;
  } finally {
    if (mounted) libc.umount2(cstr(conns), 0);
  }
}

/** `FUSE_DEV_IOC_CLONE`: `_IOR(229, 0, uint32_t)`. */
const FUSE_DEV_IOC_CLONE = 0x8004e500n;

/**
 * A new `/dev/fuse` fd on the same connection as `sessionFd`
 * (FUSE_DEV_IOC_CLONE), non-blocking: requests go to whichever fd reads
 * first, and each is answered on the fd it was read from.
 */
export function cloneFuseDevice(sessionFd: number): number {
  const fd = openFuseDevice();
  const arg = new Uint32Array([sessionFd]);
  if (libc.ioctl(fd, FUSE_DEV_IOC_CLONE, new Uint8Array(arg.buffer)) < 0) {
    const e = errno();
    close(fd);
    throw new SystemError("ioctl FUSE_DEV_IOC_CLONE", e);
  }
  return fd;
}

/** Close the device fd (the kernel ends the connection if still mounted). */
export function closeFuseDevice(fd: number): void {
  close(fd);
}
