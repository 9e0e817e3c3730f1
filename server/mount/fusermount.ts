/**
 * Mounting without privilege, through `fusermount3` (Debian package
 * `fuse3`), the setuid helper libfuse, fuser and go-fuse use: it opens
 * `/dev/fuse`, mounts with the options a user may have, and sends the fd
 * back over a Unix socket whose number it finds in `_FUSE_COMMFD`
 * (SCM_RIGHTS). Unmounting is `fusermount3 -u`, since only root may
 * `umount2` a FUSE mount.
 *
 * @module
 */

import { Errno, SystemError } from "../../ffi/errno.ts";
import { addressOf, check, close, cstr, errno, libc, O, setFdFlags } from "../../ffi/libc.ts";
import { type ChildExit, ChildProcess } from "../../ffi/spawn.ts";
import { fuseConnectionAt, type KernelMountOptions, MountError, type Unmounter } from "./mount.ts";

/** The helper's name, looked up in PATH. */
export const FUSERMOUNT = "fusermount3";

/** How long fusermount3 may take to mount or unmount, or to let go after the session. */
const FUSERMOUNT_TIMEOUT_MS = 10_000;

const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;
const MSG_DONTWAIT = 0x40;
const MSG_CMSG_CLOEXEC = 0x40000000;
const R_OK = 4;
const W_OK = 2;

/** The `-o` list fusermount3 gets: what a user mount may set (it adds user_id and the rest). */
export function fusermountOptions(o: KernelMountOptions): string {
  const parts = ["nosuid", "nodev", `fsname=${o.fsname ?? "denofuse"}`];
  const subtype = o.subtype ?? "denofuse";
  if (subtype) parts.push(`subtype=${subtype}`);
  if (o.allowOther) parts.push("allow_other");
  if (o.defaultPermissions) parts.push("default_permissions");
  if (o.readOnly) parts.push("ro");
  if (o.maxRead) parts.push(`max_read=${o.maxRead}`);
  return parts.join(",");
}

/** Run fusermount3, saying clearly when it is not installed. */
function start(args: string[], env: string[] = [], passFd?: number): ChildProcess {
  try {
    return ChildProcess.spawn(FUSERMOUNT, args, env, passFd);
  } catch (e) {
    if (e instanceof SystemError && e.errno === Errno.ENOENT) {
      throw new MountError(
        `${FUSERMOUNT} is not installed: mounting as a user other than root needs it ` +
          `(Debian and Ubuntu: apt install fuse3), or run as root`,
        Errno.ENOENT,
      );
    }
    throw e;
  }
}

/** "fusermount3 exited 1: <its message>" (null: it did not finish in time). */
function failure(exit: ChildExit | null): string {
  if (!exit) return `${FUSERMOUNT} did not finish in ${FUSERMOUNT_TIMEOUT_MS} ms`;
  const how = exit.code !== null ? `exited ${exit.code}` : `was killed by signal ${exit.signal}`;
  return `${FUSERMOUNT} ${how}${exit.stderr ? `: ${exit.stderr}` : ""}`;
}

/** A mount fusermount3 made: the fd it sent, and what the session holds until it ends. */
export interface FusermountMount {
  /** The `/dev/fuse` fd, non-blocking and close-on-exec. */
  fd: number;
  /**
   * Let go of fusermount3 when the session ends: with `autoUnmount`, close
   * the socket it watches (it unmounts, if anything is left mounted, and
   * exits) and reap it. Nothing otherwise.
   */
  release(): Promise<void>;
}

/**
 * Mount at the absolute `mountpoint` through fusermount3 and return the
 * `/dev/fuse` fd it sends back; the kernel sends INIT on it next. With
 * `autoUnmount`, fusermount3 stays behind and unmounts when this process
 * ends, however it ends. Throws a {@linkcode MountError} carrying
 * fusermount3's own message when it refuses.
 */
export async function fusermountMount(
  mountpoint: string,
  o: KernelMountOptions & { autoUnmount?: boolean },
): Promise<FusermountMount> {
  // fusermount3 opens /dev/fuse as the calling user: say so before it fails.
  if (libc.access(cstr("/dev/fuse"), R_OK | W_OK) < 0 && errno() === Errno.EACCES) {
    throw new MountError(
      `/dev/fuse is not open to user ${libc.getuid()} (fusermount3 opens it as the caller): ` +
        "as root, chmod 666 /dev/fuse (its usual mode), or mount as root",
      Errno.EACCES,
    );
  }
  const pair = new Int32Array(2);
  check(
    libc.socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, new Uint8Array(pair.buffer)),
    "socketpair",
  );
  const [ours, theirs] = pair;
  const options = fusermountOptions(o) + (o.autoUnmount ? ",auto_unmount" : "");
  let child: ChildProcess;
  try {
    child = start(["-o", options, "--", mountpoint], ["_FUSE_COMMFD=3"], theirs);
  } catch (e) {
    close(ours);
    throw e;
  } finally {
    close(theirs);
  }
  // The fd comes, then fusermount3 exits (or, with auto_unmount, stays to
  // watch our end of the socket); a refusal is an exit with no fd.
  let fd = -1;
  let exit: ChildExit | null = null;
  const deadline = Date.now() + FUSERMOUNT_TIMEOUT_MS;
  for (let delay = 1; fd < 0 && !exit; delay = Math.min(delay * 2, 20)) {
    exit = child.exited();
    fd = receiveFd(ours);
    if (Date.now() > deadline) break;
    if (fd < 0 && !exit) await new Promise((resolve) => setTimeout(resolve, delay));
  }
  if (!o.autoUnmount || fd < 0) close(ours);
  if (fd < 0) {
    const why = exit?.code === 0
      ? `${FUSERMOUNT} exited without sending a /dev/fuse fd`
      : failure(exit);
    throw new MountError(`mount ${mountpoint}: ${why}`);
  }
  setFdFlags(fd, O.NONBLOCK);
  if (!o.autoUnmount) {
    await child.wait(FUSERMOUNT_TIMEOUT_MS);
    return { fd, release: () => Promise.resolve() };
  }
  return {
    fd,
    async release() {
      close(ours);
      await child.wait(FUSERMOUNT_TIMEOUT_MS);
    },
  };
}

/** One fd from an SCM_RIGHTS message on `socket`, or -1 if none is waiting. */
function receiveFd(socket: number): number {
  const data = new Uint8Array(1);
  const iov = new BigUint64Array([addressOf(data), 1n]);
  const control = new Uint8Array(24); // CMSG_SPACE(sizeof(int))
  // struct msghdr: name, namelen, iov, iovlen, control, controllen, flags.
  const msg = new BigUint64Array([0n, 0n, addressOf(iov), 1n, addressOf(control), 24n, 0n]);
  const n = libc.recvmsg(socket, new Uint8Array(msg.buffer), MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  if (n < 0n) {
    const e = errno();
    if (e === Errno.EAGAIN) return -1;
    throw new SystemError("recvmsg", e, `fd ${socket}`);
  }
  // struct cmsghdr: len (size_t), level, type, then the fd.
  const v = new DataView(control.buffer);
  const len = Number(v.getBigUint64(0, true));
  if (len < 20 || v.getInt32(8, true) !== SOL_SOCKET || v.getInt32(12, true) !== SCM_RIGHTS) {
    return -1;
  }
  return v.getInt32(16, true);
}

function unmountArgs(mountpoint: string, lazy: boolean): string[] {
  return ["-u", "-q", ...(lazy ? ["-z"] : []), "--", mountpoint];
}

/**
 * Unmounting through `fusermount3 -u`: a plain unmount first, then a lazy
 * one (`-z`) if the mount is busy, as mount.ts's `syscallUnmounter` does
 * with umount2. Whether something was mounted is read from the mount table.
 */
export const fusermountUnmounter: Unmounter = {
  unmountSync(mountpoint: string): boolean {
    if (fuseConnectionAt(mountpoint) === null) return false;
    let exit: ChildExit | null = null;
    for (const lazy of [false, true]) {
      exit = start(unmountArgs(mountpoint, lazy)).waitSync();
      if (fuseConnectionAt(mountpoint) === null) return true;
    }
    throw new MountError(`unmount ${mountpoint}: ${failure(exit)}`);
  },
  async unmount(mountpoint: string): Promise<boolean> {
    if (fuseConnectionAt(mountpoint) === null) return false;
    let exit: ChildExit | null = null;
    for (const lazy of [false, true]) {
      // Polled, not waited for: this thread may have to serve the unmount.
      exit = await start(unmountArgs(mountpoint, lazy)).wait(FUSERMOUNT_TIMEOUT_MS);
      if (fuseConnectionAt(mountpoint) === null) return true;
    }
    throw new MountError(`unmount ${mountpoint}: ${failure(exit)}`);
  },
};
