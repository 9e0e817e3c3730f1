/**
 * An author's own FileSystem in every serving thread, from its module.
 *
 * A Worker started under `--allow-ffi` alone cannot load module files, only
 * self-contained code. So the session bundles the module the author names
 * (`perQueue: { module }`) with `deno bundle`, run as a child process
 * through `posix_spawnp` (ffi/spawn.ts): the server needs no permission
 * beyond `--allow-ffi`, and the bundle arrives in a memfd the child writes
 * as `/proc/self/fd/3`, never in a file.
 *
 * @module
 */

import { SystemError } from "../../ffi/errno.ts";
import { AT, check, close, cstr, errno, libc, readLink, readSmallFile } from "../../ffi/libc.ts";
import { ChildProcess } from "../../ffi/spawn.ts";
import { MountError } from "../mount/mount.ts";
import { withStackMap } from "./stack_map.ts";

/** How long bundling may take before the mount gives up. */
const BUNDLE_TIMEOUT_MS = 120_000;
const MFD_CLOEXEC = 1;

/** The whole content of the memfd `fd`. */
function readAll(fd: number): string {
  const stat = new Uint8Array(256);
  check(libc.statx(fd, cstr(""), AT.EMPTY_PATH, 0x200, /* STATX_SIZE */ stat), "statx");
  const size = Number(new DataView(stat.buffer).getBigUint64(40, true));
  const buf = new Uint8Array(size);
  for (let at = 0; at < size;) {
    const n = check(
      libc.pread64(fd, Deno.UnsafePointer.of(buf.subarray(at)), BigInt(size - at), BigInt(at)),
      "pread",
    );
    if (n === 0) break;
    at += n;
  }
  return new TextDecoder().decode(buf);
}

/**
 * The self-contained code of `module` (a `file:` URL or path whose code
 * calls `serveQueueThread`), as `deno bundle` makes it. Throws a
 * {@linkcode MountError} that carries what `deno bundle` said.
 */
export async function bundleQueueModule(module: string | URL): Promise<string> {
  // Deno.cwd() would need --allow-read: a relative path has nothing to be relative to.
  const url = module instanceof URL
    ? module
    : module.startsWith("/")
    ? new URL(`file://${module}`)
    : URL.canParse(module)
    ? new URL(module)
    : null;
  if (url?.protocol !== "file:") {
    throw new MountError(
      `perQueue.module must be a file: URL or an absolute path ` +
        `(import.meta.resolve("./module.ts") gives one), not ${JSON.stringify(String(module))}`,
    );
  }
  const path = decodeURIComponent(url.pathname);
  const fd = libc.memfd_create(cstr("denofuse-bundle"), MFD_CLOEXEC);
  if (fd < 0) throw new SystemError("memfd_create", errno());
  try {
    // Its environment is ours (DENO_DIR, HOME: where deno keeps its cache).
    const env = readSmallFile("/proc/self/environ").split("\0").filter((e) => e !== "");
    const child = ChildProcess.spawn(
      readLink("/proc/self/exe"),
      [
        "bundle",
        "--quiet",
        "--platform",
        "deno",
        "--sourcemap=inline",
        "--output",
        "/proc/self/fd/3",
        path,
      ],
      env,
      fd,
    );
    const exit = await child.wait(BUNDLE_TIMEOUT_MS);
    if (!exit) {
      child.kill();
      throw new MountError(`perQueue.module: deno bundle ${path} did not finish in time`);
    }
    if (exit.code !== 0) {
      throw new MountError(`perQueue.module: deno bundle ${path} failed: ${exit.stderr}`);
    }
    // Sources are named relative to the child's working directory, which is ours.
    const cwd = readLink("/proc/self/cwd");
    return withStackMap(readAll(fd), (s) => s.startsWith("/") ? s : `${cwd}/${s}`);
  } finally {
    close(fd);
  }
}
