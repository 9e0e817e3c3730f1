import assert from "node:assert/strict";
import { InitFlag, InitIn, InitOut } from "../../ops/abi.ts";
import { decodeInitIn, negotiate } from "../../ops/init.ts";

const kernelFlags = InitFlag.ASYNC_READ | InitFlag.BIG_WRITES | InitFlag.MAX_PAGES |
  InitFlag.PARALLEL_DIROPS | InitFlag.DO_READDIRPLUS | InitFlag.READDIRPLUS_AUTO |
  InitFlag.INIT_EXT | InitFlag.OVER_IO_URING | InitFlag.EXPORT_SUPPORT |
  InitFlag.WRITEBACK_CACHE | InitFlag.ABORT_ERROR;

function replyView(r: ReturnType<typeof negotiate>): DataView {
  assert.notEqual(r.kind, "refuse");
  if (r.kind === "refuse") throw new Error();
  return new DataView(r.reply.buffer);
}

Deno.test("init: 7.45 kernel gets 7.45, 1 MiB writes, 256 pages, INIT_EXT", () => {
  const r = negotiate({ major: 7, minor: 45, maxReadahead: 131072, flags: kernelFlags });
  assert.equal(r.kind, "ready");
  if (r.kind !== "ready") return;
  const v = replyView(r);
  assert.equal(r.reply.length, InitOut.SIZE);
  assert.equal(v.getUint32(InitOut.major, true), 7);
  assert.equal(v.getUint32(InitOut.minor, true), 45);
  assert.equal(v.getUint32(InitOut.max_write, true), 1 << 20);
  assert.equal(v.getUint16(InitOut.max_pages, true), 256);
  assert.equal(v.getUint32(InitOut.max_readahead, true), 131072);
  const flags = BigInt(v.getUint32(InitOut.flags, true)) |
    (BigInt(v.getUint32(InitOut.flags2, true)) << 32n);
  assert.equal(flags, r.flags);
  for (const f of ["ASYNC_READ", "BIG_WRITES", "MAX_PAGES", "PARALLEL_DIROPS", "INIT_EXT"]) {
    assert.ok(flags & InitFlag[f as keyof typeof InitFlag], f);
  }
  // Off unless asked for: export support, writeback cache, io_uring, readdirplus.
  assert.equal(flags & InitFlag.EXPORT_SUPPORT, 0n);
  assert.equal(flags & InitFlag.WRITEBACK_CACHE, 0n);
  assert.equal(flags & InitFlag.OVER_IO_URING, 0n);
  assert.equal(flags & InitFlag.DO_READDIRPLUS, 0n);
});

Deno.test("init: kernel passthrough with max_stack_depth 1, instead of a writeback cache", () => {
  const offered = kernelFlags | InitFlag.PASSTHROUGH;
  const k = { major: 7, minor: 45, maxReadahead: 131072, flags: offered };
  const r = negotiate(k, { passthrough: true, writebackCache: true, handleKillpriv: true });
  assert.equal(r.kind, "ready");
  if (r.kind !== "ready") return;
  assert.ok(r.flags & InitFlag.PASSTHROUGH);
  assert.equal(r.flags & InitFlag.WRITEBACK_CACHE, 0n); // the kernel would drop passthrough
  assert.equal(replyView(r).getUint32(InitOut.max_stack_depth, true), 1);
  // Not offered (before 6.9, or without CONFIG_FUSE_PASSTHROUGH): not agreed, no depth.
  const old = negotiate({ ...k, flags: kernelFlags }, { passthrough: true });
  assert.equal(old.kind === "ready" && old.flags & InitFlag.PASSTHROUGH, 0n);
  assert.equal(replyView(old).getUint32(InitOut.max_stack_depth, true), 0);
});

Deno.test("init: options turn on what the kernel offers, never what it does not", () => {
  const r = negotiate(
    { major: 7, minor: 45, maxReadahead: 131072, flags: kernelFlags },
    { ioUring: true, readdirplus: true, writebackCache: true, posixLocks: true, maxWrite: 65536 },
  );
  if (r.kind !== "ready") throw new Error(r.kind);
  assert.ok(r.flags & InitFlag.OVER_IO_URING);
  assert.ok(r.flags & InitFlag.DO_READDIRPLUS);
  assert.ok(r.flags & InitFlag.WRITEBACK_CACHE);
  assert.equal(r.flags & InitFlag.POSIX_LOCKS, 0n, "kernel did not offer POSIX_LOCKS");
  assert.equal(r.maxWrite, 65536);
});

Deno.test("init: a 7.46 kernel gets 7.46, and its buffer pools are kept with io_uring", () => {
  const offered = kernelFlags | InitFlag.HAS_IO_URING_BUFPOOL;
  const k = { major: 7, minor: 46, maxReadahead: 131072, flags: offered };
  const r = negotiate(k, { ioUring: true });
  if (r.kind !== "ready") throw new Error(r.kind);
  assert.equal(r.minor, 46);
  assert.ok(r.flags & InitFlag.HAS_IO_URING_BUFPOOL);
  // Only what the kernel offered: a 7.45 kernel's flags never gain it.
  const older = negotiate({ ...k, minor: 45, flags: kernelFlags }, { ioUring: true });
  assert.equal(older.kind === "ready" && older.flags & InitFlag.HAS_IO_URING_BUFPOOL, 0n);
  // Without io_uring the pools mean nothing to this connection.
  const dev = negotiate(k);
  assert.equal(dev.kind === "ready" && dev.flags & InitFlag.HAS_IO_URING_BUFPOOL, 0n);
});

Deno.test("init: a newer major is answered with ours; an old kernel is refused", () => {
  const retry = negotiate({ major: 8, minor: 0, maxReadahead: 0, flags: 0n });
  assert.equal(retry.kind, "retry");
  if (retry.kind === "retry") {
    assert.equal(retry.reply.length, 8);
    assert.equal(new DataView(retry.reply.buffer).getUint32(0, true), 7);
  }
  const old = negotiate({ major: 7, minor: 30, maxReadahead: 0, flags: 0n });
  assert.equal(old.kind, "refuse");
  if (old.kind === "refuse") assert.match(old.reason, /7\.30 is older than 7\.31/);
});

Deno.test("init: below 7.36 there is no flags2 and no INIT_EXT", () => {
  const r = negotiate({ major: 7, minor: 34, maxReadahead: 0, flags: kernelFlags });
  if (r.kind !== "ready") throw new Error(r.kind);
  assert.equal(r.minor, 34);
  assert.equal(r.flags & InitFlag.INIT_EXT, 0n);
  assert.equal(r.flags >> 32n, 0n);
});

Deno.test("init: flags2 is read only when the kernel sets INIT_EXT", () => {
  const buf = new DataView(new ArrayBuffer(InitIn.SIZE));
  buf.setUint32(InitIn.major, 7, true);
  buf.setUint32(InitIn.minor, 45, true);
  buf.setUint32(InitIn.flags2, 1 << 9, true); // OVER_IO_URING
  assert.equal(decodeInitIn(buf, 0, InitIn.SIZE).flags, 0n);
  buf.setUint32(InitIn.flags, Number(InitFlag.INIT_EXT), true);
  assert.equal(decodeInitIn(buf, 0, InitIn.SIZE).flags, InitFlag.INIT_EXT | InitFlag.OVER_IO_URING);
  assert.equal(decodeInitIn(buf, 0, InitIn.COMPAT_SIZE).flags, InitFlag.INIT_EXT);
});

import { parseMountArgs, UsageError, VERSION } from "../../server/cli.ts";

Deno.test("cli: -o options, -d and positionals parse like mount.fuse", () => {
  const cli = parseMountArgs([
    "src",
    "-o",
    "allow_other,default_permissions,ro,no_io_uring,max_write=131072,fsname=x",
    "mnt",
    "-oio_uring_q_depth=4,attr_timeout=0.5",
    "-d",
  ]);
  assert.ok(cli);
  assert.deepEqual(cli.positionals, ["src", "mnt"]);
  const { debug, ...rest } = cli.options;
  assert.equal(typeof debug, "function");
  assert.deepEqual(rest, {
    allowOther: true,
    defaultPermissions: true,
    readOnly: true,
    transport: "dev",
    maxWrite: 131072,
    fsname: "x",
    queueDepth: 4,
    attrTimeout: 0.5,
  });
  assert.equal(parseMountArgs(["--help"]), null);
  assert.equal(parseMountArgs(["--version"])!.version, true);
  assert.equal(parseMountArgs(["-V"])!.version, true);
  const denoJson = JSON.parse(Deno.readTextFileSync(new URL("../../deno.json", import.meta.url)));
  assert.equal(VERSION, denoJson.version);
  assert.deepEqual(parseMountArgs(["-o", "io_uring,mine=1"], ["mine"])!.extra, { mine: "1" });
  assert.throws(() => parseMountArgs(["-o", "bogus"]), UsageError);
  assert.throws(() => parseMountArgs(["-o", "max_write=-1"]), /positive whole number/);
  assert.throws(() => parseMountArgs(["-x"]), /unknown flag: -x/);
});

Deno.test("cli: the buffer-pool modes, their pool size, and --counters", () => {
  const pool = parseMountArgs(["m", "-o", "io_uring_bufpool,io_uring_bufpool_buffers=3"])!;
  assert.deepEqual(pool.options, { uringMode: "bufpool", transport: "io_uring", poolBuffers: 3 });
  const zc = parseMountArgs(["m", "-o", "io_uring_bufpool_zero_copy"])!;
  assert.deepEqual(zc.options, { uringMode: "bufpool_zero_copy", transport: "io_uring" });
  assert.equal(
    parseMountArgs(["m", "-o", "io_uring_mode=bufpool_zero_copy"])!.options.uringMode,
    "bufpool_zero_copy",
  );
  assert.throws(() => parseMountArgs(["-o", "io_uring_bufpool_buffers=0"]), /positive whole/);
  assert.throws(() => parseMountArgs(["-o", "io_uring_mode=pool"]), /takes auto, bufpool_zero_/);
  assert.equal(parseMountArgs(["m", "--counters"])!.counters, true);
  assert.equal(parseMountArgs(["m"])!.counters, undefined);
});
