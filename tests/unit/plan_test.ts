// The first phase of mounting, with made-up machines: which transport,
// depth, modes and mounter each combination of options and probes gets.
import assert from "node:assert/strict";
import { MountError } from "../../server/mount/mount.ts";
import { type MachineProbes, type PlanOptions, planTransport } from "../../server/plan.ts";

/**
 * A root process on a 4-CPU kernel with io_uring and the seeds' buffer
 * rings; buffer pools not asked before mounting (as for `auto`: INIT says).
 */
const SEED_KERNEL: MachineProbes = {
  uringUnavailable: null,
  cpus: 4,
  queueDepth: 8,
  bufferRingMissing: null,
  bufferPoolMissing: null,
  root: true,
  canMount: true,
};
/** Mainline: io_uring, no buffer rings. */
const MAINLINE = { ...SEED_KERNEL, bufferRingMissing: "no FUSE buffer rings" };
/** Mainline before 7.3, as a throwaway connection says when a pool mode is named. */
const NO_POOLS = { ...MAINLINE, bufferPoolMissing: "no FUSE_HAS_IO_URING_BUFPOOL at INIT" };
const SWITCHED_OFF = { ...MAINLINE, uringUnavailable: "enable_uring is N" };

const plan = (o: PlanOptions, p: MachineProbes) => planTransport(o, p);
const fails = (o: PlanOptions, p: MachineProbes, message: RegExp) =>
  assert.throws(() => plan(o, p), (e: Error) => e instanceof MountError && message.test(e.message));

Deno.test("plan: auto takes io_uring and the best mode the kernel and privileges allow", () => {
  // Best first: 7.3's pools (kept only if INIT offers them), the seeds' rings, mainline.
  assert.deepEqual(plan({}, SEED_KERNEL).modes, [
    "bufpool_zero_copy",
    "bufpool",
    "zero_copy",
    "buf_ring",
    "mainline",
  ]);
  const user = plan({}, { ...SEED_KERNEL, root: false });
  assert.deepEqual(user.modes, ["bufpool", "buf_ring", "mainline"]);
  assert.deepEqual(user.debug, [
    "io_uring: not bufpool_zero_copy: zero-copy needs CAP_SYS_ADMIN (root)",
    "io_uring: not zero_copy: zero-copy needs CAP_SYS_ADMIN (root)",
  ]);
  const p = plan({}, MAINLINE);
  assert.equal(p.transport, "io_uring");
  assert.equal(p.fallbackReason, null);
  assert.deepEqual(p.modes, ["bufpool_zero_copy", "bufpool", "mainline"]);
  assert.deepEqual(p.debug, [
    "io_uring: not zero_copy: no FUSE buffer rings",
    "io_uring: not buf_ring: no FUSE buffer rings",
  ]);
  assert.equal(p.queueDepth, 8);
  assert.equal(p.threads, 4);
  assert.equal(p.mountedBy, "mount");
});

Deno.test("plan: without io_uring, auto falls back to /dev/fuse and says why; io_uring fails", () => {
  const p = plan({}, SWITCHED_OFF);
  assert.equal(p.transport, "dev");
  assert.equal(p.fallbackReason, "enable_uring is N");
  assert.deepEqual(p.modes, []);
  fails({ transport: "io_uring" }, SWITCHED_OFF, /^io_uring transport: enable_uring is N$/);
  const dev = plan({ transport: "dev" }, SEED_KERNEL);
  assert.equal(dev.transport, "dev");
  assert.equal(dev.fallbackReason, "the dev transport was asked for");
});

Deno.test("plan: RLIMIT_MEMLOCK shrinks the depth, or sends auto to /dev/fuse", () => {
  const small = plan({}, { ...MAINLINE, queueDepth: 3 });
  assert.equal(small.queueDepth, 3);
  assert.equal(small.debug[0], "io_uring: 3 entries per queue, to fit RLIMIT_MEMLOCK");
  const none = { ...MAINLINE, queueDepth: "fixed buffers need 9 MiB of locked memory" };
  assert.equal(plan({}, none).transport, "dev");
  assert.equal(plan({}, none).fallbackReason, none.queueDepth);
  fails({ transport: "io_uring" }, none, /locked memory/);
  assert.equal(plan({ queueDepth: 2 }, MAINLINE).queueDepth, 2);
});

Deno.test("plan: a named io_uring mode is the only one tried, and fails where missing", () => {
  assert.deepEqual(plan({ uringMode: "buf_ring" }, SEED_KERNEL).modes, ["buf_ring"]);
  assert.deepEqual(plan({ uringMode: "mainline" }, SEED_KERNEL).modes, ["mainline"]);
  fails({ uringMode: "zero_copy" }, MAINLINE, /^io_uring zero_copy mode: no FUSE buffer rings$/);
  assert.deepEqual(plan({ uringMode: "bufpool" }, SEED_KERNEL).modes, ["bufpool"]);
  fails(
    { uringMode: "bufpool" },
    NO_POOLS,
    /^io_uring bufpool mode: no FUSE_HAS_IO_URING_BUFPOOL at INIT$/,
  );
  fails(
    { uringMode: "bufpool_zero_copy" },
    { ...SEED_KERNEL, root: false },
    /^io_uring bufpool_zero_copy mode: zero-copy needs CAP_SYS_ADMIN \(root\)$/,
  );
  // Over /dev/fuse no mode is asked of the kernel.
  assert.deepEqual(plan({ uringMode: "zero_copy", transport: "dev" }, MAINLINE).modes, []);
});

Deno.test("plan: who mounts, and kernel passthrough only with CAP_SYS_ADMIN", () => {
  const user = { ...MAINLINE, root: false, canMount: false };
  assert.equal(plan({}, user).mountedBy, "fusermount3");
  assert.equal(plan({ autoUnmount: true }, MAINLINE).mountedBy, "fusermount3");
  assert.equal(plan({ fusermount: true }, MAINLINE).mountedBy, "fusermount3");
  assert.equal(plan({ passthrough: true }, MAINLINE).passthrough, true);
  const p = plan({ passthrough: true }, user);
  assert.equal(p.passthrough, false);
  assert.match(p.notices.join("\n"), /kernel passthrough needs CAP_SYS_ADMIN/);
  assert.equal(plan({ threads: 1 }, MAINLINE).threads, 1);
});

Deno.test("plan: option values no plan can take are clear errors", () => {
  fails(
    { transport: "fast" as "dev" },
    MAINLINE,
    /unknown transport "fast": use auto, dev or io_uring$/,
  );
  fails({ backingIo: "mmap" as "ring" }, MAINLINE, /unknown backingIo "mmap": use ring or direct$/);
  fails({ uringMode: "x" as "mainline" }, MAINLINE, /unknown io_uring mode "x"/);
  fails({ autoUnmount: true, fusermount: false }, MAINLINE, /autoUnmount works through/);
});
