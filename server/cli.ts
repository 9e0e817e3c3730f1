/**
 * Command lines in the style of mount.fuse and libfuse's examples:
 * positional arguments, `-o opt[,opt=value...]`, `-d` for a debug log,
 * `-h`/`--help`. Shared by the examples so every server takes the same options.
 *
 * @module
 */

import type { FileSystem } from "../ops/filesystem.ts";
import { FUSE_KERNEL_MINOR_VERSION, FUSE_KERNEL_VERSION } from "../ops/abi.ts";
import { MountError } from "./mount/mount.ts";
import { formatProbe, probe } from "./probe.ts";
import { mount, type MountOptions, type Session } from "./session.ts";
import type { UringMode } from "./uring/modes/mode.ts";
import { MODE_NAMES } from "./uring/modes/modes.ts";

/** A parsed command line. */
export interface MountCommandLine {
  /** `--version` was asked for: print it and exit. */
  version?: boolean;
  /** `--probe` was asked for: print what the kernel offers and exit. */
  probe?: boolean;
  /** The positional arguments (e.g. SOURCE MOUNTPOINT). */
  positionals: string[];
  /** Mount options from `-o` and `-d`. */
  options: MountOptions;
  /** `-o` options the caller declared in `extra`, by name (value or `true`). */
  extra: Record<string, string | true>;
  /** `--counters`: print the session's counters on stderr when it ends. */
  counters?: boolean;
}

/** This release of denofuse (kept equal to deno.json's version by a test). */
export const VERSION = "0.1.0";

/** What `-o` understands, for `--help`. */
export const MOUNT_OPTIONS_HELP = `Options:
  -d                      log every request and reply (libfuse's debug mode)
  --counters              at exit, print what each transport and queue did
                          (requests, bytes through the server, zero-copy)
  -o opt[,opt...]         mount options:
     allow_other            let other users in
     default_permissions    let the kernel check permissions from file modes
     ro                     mount read-only
     fsname=NAME            source name shown in /proc/mounts
     subtype=NAME           type shown as fuse.NAME
     fusermount             mount through fusermount3 (package fuse3), as
                            users other than root always do
     auto_unmount           have fusermount3 unmount when the server ends,
                            however it ends (a crash, kill -9)
     passthrough            hand whole-file opens to the kernel, which then
                            moves their data itself (FUSE_PASSTHROUGH; root)
     nopassthrough          serve all file data from the server
     io_uring               require FUSE-over-io_uring (fail if unavailable)
     no_io_uring            serve over /dev/fuse only
     io_uring_q_depth=N     ring entries per queue (default 8)
     io_uring_mode=MODE     how io_uring queues take requests: auto (default:
                            the best the kernel offers), mainline (a payload
                            buffer per entry), bufpool (a buffer pool per
                            queue; Linux 7.3+), bufpool_zero_copy (and the
                            client's pages as fixed buffers; root), buf_ring
                            or zero_copy (the seeds' FUSE buffer-ring series);
                            see --probe
     io_uring_bufpool       io_uring_mode=bufpool, and require io_uring
     io_uring_bufpool_zero_copy
                            io_uring_mode=bufpool_zero_copy, and io_uring
     io_uring_bufpool_buffers=N
                            payload buffers in each queue's pool (default:
                            the queue depth)
     io_uring_bufring       io_uring_mode=buf_ring, and require io_uring
     io_uring_zero_copy     io_uring_mode=zero_copy, and require io_uring
     threads=N              serving threads, the main thread among them
                            (default: one per CPU: io_uring queue threads
                            pinned to their CPU, or /dev/fuse threads each
                            reading a clone of the fd); 1: the main thread
                            serves alone
     backing_io=MODE        ring: backing calls as io_uring operations;
                            direct: system calls on the serving thread;
                            auto (default): the server's choice
     max_write=N            largest write request in bytes (default 1048576)
     max_read=N             largest read request in bytes (default 1048576)
     entry_timeout=S        seconds names are cached (default 1)
     attr_timeout=S         seconds attributes are cached (default 1)
  -h, --help              show this help
  -V, --version           show the denofuse and FUSE protocol versions
  --probe                 show what this kernel offers (io_uring, fixed
                          buffers, buffer pools, buffer rings, zero-copy);
                          as root it mounts and unmounts a throwaway FUSE
                          connection on a fresh directory to ask`;

/** An `-o` option of a server's own: declared for `runMain`, shown by `--help`. */
export interface ServerOption {
  /** Its name: `-o NAME`, or `-o NAME=VALUE` when it takes a value. */
  name: string;
  /** What it takes, as `--help` shows it (`N`, `PATH`); absent for an option without a value. */
  value?: string;
  /** What it does, for `--help` (one line, or a few). */
  help: string;
}

/** The `--help` lines of a server's own options. */
export function serverOptionsHelp(name: string, own: readonly ServerOption[]): string {
  if (own.length === 0) return "";
  const lines = own.map((o) => {
    const left = `     ${o.name}${o.value ? `=${o.value}` : ""}`;
    const pad = " ".repeat(Math.max(1, 28 - left.length));
    return `${left}${pad}${o.help.replaceAll("\n", `\n${" ".repeat(28)}`)}`;
  });
  return `\nOptions of ${name} (-o):\n${lines.join("\n")}`;
}

/** Check the server's own options a command line gave against their declarations. */
function checkOwn(extra: Record<string, string | true>, own: readonly ServerOption[]): void {
  for (const o of own) {
    const v = extra[o.name];
    if (v === undefined) continue;
    if (o.value && v === true) throw new UsageError(`-o ${o.name} needs a value (${o.value})`);
    if (!o.value && v !== true) throw new UsageError(`-o ${o.name} takes no value`);
  }
}

/** Thrown for a bad command line; `message` says what is wrong. */
export class UsageError extends Error {
  /**
   * A command-line mistake.
   * @param message what is wrong
   */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

function positiveInt(name: string, value: string | undefined): number {
  const n = Number(value);
  if (!value || !Number.isInteger(n) || n <= 0) {
    throw new UsageError(`-o ${name} needs a positive whole number, got ${JSON.stringify(value)}`);
  }
  return n;
}

function seconds(name: string, value: string | undefined): number {
  const n = Number(value);
  if (!value || !(n >= 0)) {
    throw new UsageError(`-o ${name} needs a number of seconds, got ${JSON.stringify(value)}`);
  }
  return n;
}

/** A shorthand option: io_uring in `mode`, and io_uring required. */
function requireMode(mode: UringMode): (o: MountOptions) => void {
  return (o) => {
    o.uringMode = mode;
    o.transport = "io_uring";
  };
}

/** The mount options of `-o`, each setting what it names in {@linkcode MountOptions}. */
const MOUNT_O: Record<string, (o: MountOptions, value: string | undefined, name: string) => void> =
  {
    allow_other: (o) => o.allowOther = true,
    default_permissions: (o) => o.defaultPermissions = true,
    ro: (o) => o.readOnly = true,
    rw: (o) => o.readOnly = false,
    fusermount: (o) => o.fusermount = true,
    auto_unmount: (o) => o.autoUnmount = true,
    passthrough: (o) => o.passthrough = true,
    nopassthrough: (o) => o.passthrough = false,
    fsname: (o, v, name) => o.fsname = needValue(name, v),
    subtype: (o, v, name) => o.subtype = needValue(name, v),
    io_uring: (o) => o.transport = "io_uring",
    no_io_uring: (o) => o.transport = "dev",
    io_uring_mode: (o, v) => {
      const modes = ["auto", ...MODE_NAMES];
      if (!modes.includes(v as UringMode)) {
        throw new UsageError(
          `-o io_uring_mode takes ${modes.slice(0, -1).join(", ")} or ${modes.at(-1)}`,
        );
      }
      o.uringMode = v as MountOptions["uringMode"];
    },
    io_uring_bufpool: requireMode("bufpool"),
    io_uring_bufpool_zero_copy: requireMode("bufpool_zero_copy"),
    io_uring_bufpool_buffers: (o, v, name) => o.poolBuffers = positiveInt(name, v),
    io_uring_bufring: requireMode("buf_ring"),
    io_uring_zero_copy: requireMode("zero_copy"),
    io_uring_q_depth: (o, v, name) => o.queueDepth = positiveInt(name, v),
    threads: (o, v, name) => o.threads = positiveInt(name, v),
    backing_io: (o, v) => {
      if (v === "ring" || v === "direct") o.backingIo = v;
      else if (v === "auto") delete o.backingIo;
      else throw new UsageError("-o backing_io takes ring, direct or auto");
    },
    max_write: (o, v, name) => o.maxWrite = positiveInt(name, v),
    max_read: (o, v, name) => o.maxRead = positiveInt(name, v),
    entry_timeout: (o, v, name) => o.entryTimeout = seconds(name, v),
    attr_timeout: (o, v, name) => o.attrTimeout = seconds(name, v),
  };

function needValue(name: string, value: string | undefined): string {
  if (!value) throw new UsageError(`-o ${name} needs a value`);
  return value;
}

/**
 * Apply one `-o` list (`a,b=c`) to `options`, or to `own` for the
 * caller's own options named in `extra`.
 */
function applyOptionList(
  list: string,
  options: MountOptions,
  own: Record<string, string | true>,
  extra: readonly string[] | undefined,
): void {
  for (const item of list.split(",").filter((s) => s)) {
    const eq = item.indexOf("=");
    const name = eq < 0 ? item : item.slice(0, eq);
    const value = eq < 0 ? undefined : item.slice(eq + 1);
    const apply = Object.hasOwn(MOUNT_O, name) ? MOUNT_O[name] : undefined;
    if (apply) apply(options, value, name);
    else if (extra?.includes(name)) own[name] = value ?? true;
    else throw new UsageError(`unknown mount option: ${name}`);
  }
}

/**
 * Parse `args`. Throws {@linkcode UsageError} for an unknown or malformed
 * option; returns `null` when help was asked for. Options named in `extra`
 * are the caller's own (`-o source_mode=...`) and are returned unparsed.
 */
export function parseMountArgs(
  args: string[],
  extra?: readonly string[],
): MountCommandLine | null {
  const positionals: string[] = [];
  const options: MountOptions = {};
  const own: Record<string, string | true> = {};
  let counters = false;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "-h" || arg === "--help") return null;
    if (arg === "-V" || arg === "--version") {
      return { positionals, options, extra: own, version: true };
    }
    if (arg === "--probe") return { positionals, options, extra: own, probe: true };
    if (arg === "--counters") {
      counters = true;
    } else if (arg === "-d") {
      options.debug = (line) => console.error(line);
    } else if (arg === "-o" || (arg.startsWith("-o") && arg.length > 2)) {
      const list = arg === "-o" ? args[++i] : arg.slice(2);
      if (list === undefined) throw new UsageError("-o needs a list of options");
      applyOptionList(list, options, own, extra);
    } else if (arg.startsWith("-") && arg !== "-") {
      throw new UsageError(`unknown flag: ${arg}`);
    } else positionals.push(arg);
  }
  return { positionals, options, extra: own, ...(counters ? { counters } : {}) };
}

/**
 * Run a server's `main`: parse `Deno.args`, let `start` mount, say where,
 * and serve until unmounted (Ctrl-C unmounts). `--help` prints the usage,
 * with the server's `own` options; a bad command line
 * ({@linkcode UsageError}) prints it and exits 2; a failed mount prints the
 * one-line reason and exits 1. The own options given reach `start` in
 * `cli.extra` (by name: the value, or `true`).
 */
export async function runMain(
  name: string,
  args: string,
  start: (cli: MountCommandLine) => Promise<Session>,
  own?: readonly ServerOption[],
): Promise<void> {
  own ??= [];
  const usage = `usage: deno run --allow-ffi ${name} ${args} [-d] [--counters] [-o opt,...]`;
  let session: Session;
  let debugging = false;
  try {
    const cli = parseMountArgs(Deno.args, own.map((o) => o.name));
    if (!cli) {
      console.log(`${usage}\n${MOUNT_OPTIONS_HELP}${serverOptionsHelp(name, own)}`);
      return;
    }
    checkOwn(cli.extra, own);
    if (cli.probe) {
      console.log(formatProbe(probe()));
      return;
    }
    if (cli.version) {
      console.log(
        `denofuse ${VERSION} (FUSE protocol ${FUSE_KERNEL_VERSION}.${FUSE_KERNEL_MINOR_VERSION})`,
      );
      return;
    }
    // This process only serves: its main thread may serve a queue too.
    cli.options.callingThreadServes ??= true;
    session = await start(cli);
    debugging = cli.options.debug !== undefined || cli.counters === true;
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`${name}: ${e.message}\n${usage}`);
      Deno.exit(2);
    }
    console.error(`${name}: ${e instanceof MountError ? e.message : e}`);
    Deno.exit(1);
  }
  console.log(
    `${name}: mounted on ${session.mountpoint} over ${session.transport}` +
      `${session.uringMode ? ` (${session.uringMode})` : ""}` +
      `${session.kernelPassthrough ? ", file data by kernel passthrough" : ""}; Ctrl-C to unmount`,
  );
  try {
    await session.closed;
  } catch (e) {
    // The session ended on a fault (a queue thread died): say so, fail.
    console.error(`${name}: ${(e as Error).message}`);
    Deno.exit(1);
  } finally {
    // The debug log (or --counters) ends with what each transport and queue did.
    if (debugging) console.error(`counters: ${JSON.stringify(session.counters)}`);
  }
}

/**
 * `main` of a server with one MOUNTPOINT argument, mounting `fs` with
 * `defaults`. With `own` options, `fs` may be a function of the ones given
 * (see {@linkcode runMain}).
 */
export function serveFromCommandLine(
  fs: FileSystem | ((own: Record<string, string | true>) => FileSystem),
  name: string,
  defaults?: MountOptions,
  own?: readonly ServerOption[],
): Promise<void> {
  return runMain(name, "MOUNTPOINT", (cli) => {
    if (cli.positionals.length !== 1) throw new UsageError("expected one MOUNTPOINT");
    const served = typeof fs === "function" ? fs(cli.extra) : fs;
    return mount(served, cli.positionals[0], { ...defaults, ...cli.options });
  }, own);
}
