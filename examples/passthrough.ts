/**
 * The passthrough's command line: mounts SOURCE at MOUNTPOINT and forwards
 * every operation to it, in the manner of libfuse's passthrough_hp (the file
 * system itself is `fs/passthrough.ts`).
 *
 *     deno run --allow-ffi examples/passthrough.ts [SOURCE] MOUNTPOINT [-d] [-o opts]
 *
 * Without SOURCE it serves /tmp/denofuse-source (created if missing).
 * default_permissions is on, as in passthrough_hp: the kernel checks access
 * from the modes the server reports. With io_uring, an instance of the
 * passthrough runs in every queue thread, sharing one inode table.
 *
 * @module
 */

import { mount, runMain, S, UsageError } from "../mod.ts";
import { checkMountpoint, realPath, statMode } from "../server/mount/mount.ts";
import { AT, cstr, libc } from "../ffi/libc.ts";
import { Passthrough } from "../fs/passthrough.ts";
import { PASSTHROUGH_QUEUE_SOURCE } from "../gen/passthrough_queue_source.ts";

export { attrFromStatx, Passthrough } from "../fs/passthrough.ts";

/** The source served when the command line names only a mountpoint. */
export const DEFAULT_SOURCE = "/tmp/denofuse-source";

/**
 * Check SOURCE and MOUNTPOINT for the CLI: both directories, and the
 * mountpoint not inside the source (the mount would then contain itself).
 */
export function checkSourceAndMountpoint(source: string, mountpoint: string): void {
  let src: string;
  try {
    src = realPath(source);
    if ((statMode(src) & S.IFMT) !== S.IFDIR) {
      throw new UsageError(`source ${source} is not a directory`);
    }
  } catch (e) {
    if (e instanceof UsageError) throw e;
    throw new UsageError(`source ${source}: ${(e as Error).message}`);
  }
  const mnt = checkMountpoint(mountpoint);
  if (mnt === src || mnt.startsWith(src.endsWith("/") ? src : src + "/")) {
    throw new UsageError(`mountpoint ${mountpoint} is inside the source ${source}`);
  }
}

if (import.meta.main) {
  await runMain("examples/passthrough.ts", "[SOURCE] MOUNTPOINT", async (cli) => {
    if (cli.positionals.length < 1 || cli.positionals.length > 2) {
      throw new UsageError("expected [SOURCE] MOUNTPOINT");
    }
    const [source, mountpoint] = cli.positionals.length === 2
      ? cli.positionals
      : [DEFAULT_SOURCE, cli.positionals[0]];
    if (source === DEFAULT_SOURCE) libc.mkdirat(AT.FDCWD, cstr(source), 0o755);
    checkSourceAndMountpoint(source, mountpoint);
    const fs = new Passthrough(source);
    return await mount(fs, mountpoint, {
      fsname: source,
      subtype: "passthrough",
      defaultPermissions: true,
      atomicOTrunc: true,
      // Writes by unprivileged callers clear setuid/setgid here (and the
      // kernel stops asking for security.capability before every write).
      handleKillpriv: true,
      // -o backing_io=auto (the default): nothing on a memory file system
      // can block, so skip io_uring's hand-off to its worker threads there.
      backingIo: fs.memoryBacked ? "direct" : "ring",
      // Every queue thread runs the passthrough too, over the same inode table.
      perQueue: { source: PASSTHROUGH_QUEUE_SOURCE, data: fs.shared },
      // As passthrough_hp: file data goes from the kernel to the source files
      // directly (FUSE_PASSTHROUGH; root only, -o nopassthrough to serve it).
      passthrough: true,
      ...cli.options,
    });
  });
}
