// Helpers for tests that mount: skip cleanly without privileges, time-limit
// everything, and never leave a mount behind.
import assert from "node:assert/strict";
import { close, libc, O, open, readSmallFile } from "../ffi/libc.ts";
import { abortFuseConnection, fuseConnectionAt } from "../server/mount/mount.ts";
import type { SessionCounters } from "../server/session.ts";

/** True when this process may mount FUSE file systems here. */
export const canMount = libc.geteuid() === 0 && hasFuseDevice();

// Deno's fs API wants --allow-all for device files; ask libc instead.
function hasFuseDevice(): boolean {
  try {
    close(open("/dev/fuse", O.RDWR));
    return true;
  } catch {
    return false;
  }
}

const inCI = Deno.env.get("CI") === "true";
if (!canMount && !inCI) {
  sayOnce(
    "MOUNT",
    "mount tests skipped: they need root and /dev/fuse (CI=true makes them mandatory)",
  );
}

/** Define a test that mounts: skipped without privileges (except in CI), time-limited. */
export function mountTest(name: string, fn: () => Promise<void>, timeoutMs = 60_000): void {
  defineMountTest(name, fn, timeoutMs, false);
}

/**
 * Define a test that mounts over FUSE-over-io_uring: like {@link mountTest},
 * and also skipped (outside CI) while the kernel does not offer io_uring.
 */
export function uringTest(name: string, fn: () => Promise<void>, timeoutMs = 60_000): void {
  defineMountTest(name, fn, timeoutMs, true);
}

/** Run `fn`, rejecting if it has not settled after `ms` (the timer never outlives it). */
export async function withTimeout(fn: () => Promise<void>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      fn(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

function defineMountTest(
  name: string,
  fn: () => Promise<void>,
  timeoutMs: number,
  needsUring: boolean,
): void {
  Deno.test({
    name,
    ignore: !inCI && (!canMount || (needsUring && uringMissing !== null)),
    sanitizeResources: false,
    sanitizeOps: false,
    async fn() {
      if (!canMount) {
        throw new Error("CI=true but this process cannot mount (needs root and /dev/fuse)");
      }
      if (needsUring && uringMissing) throw new Error(`CI=true but io_uring: ${uringMissing}`);
      // The connections mounted on this test's mountpoints, noted while
      // they are mounted: a test stuck on one never reaches its cleanup, and
      // a detached mount no longer shows where it was.
      const seen = new Set<string>();
      const note = () => {
        for (const dir of liveMountpoints) {
          const minor = fuseConnectionAt(dir);
          if (minor) seen.add(minor);
        }
      };
      const noting = setInterval(note, 100);
      try {
        await withTimeout(fn, timeoutMs);
      } catch (e) {
        if (/^timed out after/.test((e as Error).message)) {
          // Abort them, so that neither this process nor a server in it
          // waits on them for ever (and the process can exit).
          note();
          for (const minor of seen) abortFuseConnection(minor);
          for (const dir of liveMountpoints) await forceUnmount(dir);
        }
        throw e;
      } finally {
        clearInterval(noting);
      }
    },
  });
}

/** Result of an external command. */
export interface Output {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run a command to completion (asynchronously: the server keeps serving). */
export async function run(cmd: string, ...args: string[]): Promise<Output> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Run a shell script that must succeed; resolves with its stdout. */
export async function sh(script: string): Promise<string> {
  const out = await run("sh", "-c", script);
  assert.equal(out.code, 0, `${script}\n${out.stderr}`);
  return out.stdout;
}

/** Whether `path` is a mountpoint in /proc/mounts. */
export function isMounted(path: string): boolean {
  // Through libc: cleanup must work whatever permissions the test runs with.
  const mounts = readSmallFile("/proc/mounts");
  return mounts.split("\n").some((l) => l.split(" ")[1] === path);
}

/**
 * Make sure nothing stays mounted at `path`: abort our own connection (by its
 * number from mountinfo, never another mount's; the server's own mechanism,
 * which leaves no fusectl mount behind) and detach it.
 */
export async function forceUnmount(path: string): Promise<void> {
  if (!isMounted(path)) return;
  const minor = fuseConnectionAt(path);
  if (minor) abortFuseConnection(minor);
  await run("umount", "-l", path);
}

/** Mountpoints of this process not yet cleaned up: what a timed-out test leaves. */
const liveMountpoints = new Set<string>();

/** A fresh temporary directory, removed (after a forced unmount) by the returned cleanup. */
export async function tempMountpoint(): Promise<[string, () => Promise<void>]> {
  const dir = await Deno.makeTempDir({ prefix: "denofuse-mnt-" });
  liveMountpoints.add(dir);
  return [dir, async () => {
    await forceUnmount(dir);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    liveMountpoints.delete(dir);
  }];
}

/** Wait until `predicate` holds, polling every 20 ms, up to `ms`. */
export async function waitFor(predicate: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!await predicate()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Transports to run every end-to-end test on. */
export const TRANSPORTS = ["dev", "io_uring"] as const;

/** Why io_uring cannot be tested here, or null. */
export const uringMissing: string | null = (() => {
  try {
    const on = readSmallFile("/sys/module/fuse/parameters/enable_uring").trim();
    return on === "Y"
      ? null
      : "enable_uring is off (echo Y > /sys/module/fuse/parameters/enable_uring)";
  } catch {
    return "the kernel has no FUSE-over-io_uring";
  }
})();
/** Say `line` once per test run: every test module loads this file, all in one process. */
function sayOnce(key: string, line: string): void {
  const said = `DENOFUSE_TESTS_SAID_${key}`;
  if (Deno.env.get(said)) return;
  Deno.env.set(said, "1");
  console.error(line);
}

if (uringMissing && !inCI && canMount) {
  sayOnce("URING", `io_uring tests skipped: ${uringMissing} (CI=true makes them mandatory)`);
}

/**
 * A mount test run once per transport (`name [dev]`, `name [io_uring]`); the
 * io_uring run is skipped where the kernel cannot do it, except in CI.
 */
export function transportTest(
  name: string,
  fn: (transport: typeof TRANSPORTS[number]) => Promise<void>,
  timeoutMs?: number,
): void {
  for (const transport of TRANSPORTS) {
    defineMountTest(
      `${name} [${transport}]`,
      () => fn(transport),
      timeoutMs ?? 60_000,
      transport === "io_uring",
    );
  }
}

/**
 * How file data moves through the passthrough: `kernel`, its default as
 * root (FUSE_PASSTHROUGH: the kernel reads and writes the backing files),
 * or `server` (`-o nopassthrough`: the server moves every byte).
 */
export const DATA_PATHS = ["kernel", "server"] as const;

/** The passthrough's command-line options for a data path. */
export function dataPathArgs(data: typeof DATA_PATHS[number]): string[] {
  return data === "server" ? ["-o", "nopassthrough"] : [];
}

/** A {@linkcode transportTest} for each data path as well: four tests. */
export function dataPathTest(
  name: string,
  fn: (transport: typeof TRANSPORTS[number], data: typeof DATA_PATHS[number]) => Promise<void>,
  timeoutMs?: number,
): void {
  for (const data of DATA_PATHS) {
    transportTest(`${name} {data by ${data}}`, (transport) => fn(transport, data), timeoutMs);
  }
}

/** Whether this kernel has FUSE_PASSTHROUGH (Linux 6.9+; tests mount as root). */
export const kernelHasPassthrough = (() => {
  const [major, minor] = Deno.osRelease().split(".").map(Number);
  return major > 6 || (major === 6 && minor >= 9);
})();

/**
 * Start a server as a user would (`deno run --allow-ffi ARGS...`, from the
 * repository root; under `wrapper`, a command such as `prlimit ...`, if given); resolves with the process and what it printed once it
 * says it is mounted.
 */
export async function startServer(
  args: string[],
  wrapper: string[] = [],
  denoBinary = Deno.execPath(),
): Promise<{ child: Deno.ChildProcess; out: string }> {
  const deno = [denoBinary, "run", "--allow-ffi", ...args];
  const child = new Deno.Command(wrapper[0] ?? deno[0], {
    args: [...wrapper.slice(1), ...(wrapper.length ? deno : deno.slice(1))],
    cwd: new URL("..", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!out.includes("mounted on")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`server exited early: ${out}`);
    out += value;
  }
  reader.releaseLock();
  return { child, out };
}

/** Wait for a server process to end and release its pipes. */
export async function reap(child: Deno.ChildProcess): Promise<Deno.CommandStatus> {
  const status = await child.status;
  await child.stderr.cancel().catch(() => {});
  await child.stdout.cancel().catch(() => {});
  return status;
}

/**
 * Run `fn` against examples/passthrough.ts serving a fresh source (or `source`), started as
 * a user would start it (under `wrapper`, if given; see {@linkcode startServer}), in its own
 * process. The server must not share a
 * thread with clients of its own mount: Deno runs some file calls (a small
 * FsFile.write) on the calling thread, which would then wait on itself.
 */
export async function withPassthrough(
  transport: "dev" | "io_uring",
  fn: (mnt: string, src: string, pid: number) => Promise<void>,
  extraArgs: string[] = [],
  source?: string,
  wrapper: string[] = [],
): Promise<void> {
  const [mnt, cleanup] = await tempMountpoint();
  const src = source ?? await Deno.makeTempDir({ prefix: "denofuse-src-" });
  const { child: server, out } = await startServer([
    "examples/passthrough.ts",
    src,
    mnt,
    "-o",
    transport === "io_uring" ? "io_uring" : "no_io_uring",
    ...extraArgs,
  ], wrapper);
  try {
    assert.match(out, new RegExp(`over ${transport}`));
    // The data path is the one asked for: kernel passthrough unless
    // -o nopassthrough (the passthrough's default as root).
    const served = extraArgs.some((a) => /(^|,)nopassthrough(,|$)/.test(a));
    assert.equal(/kernel passthrough/.test(out), kernelHasPassthrough && !served, out);
    await fn(mnt, src, server.pid);
    server.kill("SIGTERM");
    assert.equal((await server.status).code, 0);
    assert.equal(isMounted(mnt), false);
  } finally {
    await killServer(server);
    await cleanup();
    if (!source) await Deno.remove(src, { recursive: true });
  }
}

/**
 * Run `fn`, then fail if a promise rejection or an uncaught error reached
 * the event loop meanwhile (what would end a server's process).
 */
export async function noneUnhandled(fn: () => Promise<void>): Promise<void> {
  const seen: unknown[] = [];
  const onRejection = (e: PromiseRejectionEvent) => (e.preventDefault(), seen.push(e.reason));
  const onError = (e: ErrorEvent) => (e.preventDefault(), seen.push(e.error));
  globalThis.addEventListener("unhandledrejection", onRejection);
  globalThis.addEventListener("error", onError);
  try {
    await fn();
    await new Promise((r) => setTimeout(r, 50));
  } finally {
    globalThis.removeEventListener("unhandledrejection", onRejection);
    globalThis.removeEventListener("error", onError);
  }
  assert.deepEqual(seen, []);
}

/**
 * Stop a server with `signal` and resolve with its exit code; if it has not
 * exited after `ms`, kill it and throw, with the end of its log (`log`, its
 * stderr being drained) so a hang says where it stopped.
 */
export async function stopServer(
  child: Deno.ChildProcess,
  signal: Deno.Signal,
  log?: Promise<string>,
  ms = 60_000,
): Promise<number> {
  child.kill(signal);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<null>((r) => timer = setTimeout(r, ms, null));
  const status = await Promise.race([child.status, late]);
  clearTimeout(timer);
  if (status) return status.code;
  try {
    child.kill("SIGKILL");
  } catch { /* gone meanwhile */ }
  await child.status;
  const tail = log ? (await log.catch(() => "")).slice(-3000) : "";
  throw new Error(`the server did not exit within ${ms} ms of ${signal}; its log ends:\n${tail}`);
}

/** Make sure a server process is gone (SIGKILL if it still runs) and its pipes released. */
export async function killServer(child: Deno.ChildProcess): Promise<void> {
  try {
    child.kill("SIGKILL");
  } catch { /* already gone */ }
  await reap(child);
}

/**
 * Start a server as a user would (`deno run --allow-ffi ARGS -d`), run `fn`
 * while its debug log drains, stop it with SIGINT (it must exit 0), and
 * give the log and the counters it ends with. Never leaves it running.
 */
export async function serveLogged(
  args: string[],
  fn: () => Promise<void>,
): Promise<{ log: string; counters: SessionCounters }> {
  const { child } = await startServer([...args, "-d"]);
  // -d logs every request: drain it as it comes, or the server would block.
  const log = new Response(child.stderr).text();
  try {
    await fn();
    child.kill("SIGINT");
    assert.equal((await child.status).code, 0);
    const text = await log;
    const line = text.split("\n").find((l) => l.startsWith("counters: "));
    assert.ok(line, `no counters in the log:\n${text.slice(-2000)}`);
    return { log: text, counters: JSON.parse(line.slice("counters: ".length)) };
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await log.catch(() => "");
  }
}

/**
 * File data the server moved itself: fd reads and writes of every
 * /dev/fuse thread, and fixed-buffer reads and writes on io_uring.
 */
export function serverData(c: SessionCounters): { reads: number; writes: number } {
  const dev = [c.dev, ...(c.devThreads ?? [])];
  return {
    reads: dev.reduce((n, t) => n + t.fdReads, 0) + (c.uring?.fixedReads ?? 0),
    writes: dev.reduce((n, t) => n + t.fdWrites, 0) + (c.uring?.fixedWrites ?? 0),
  };
}
