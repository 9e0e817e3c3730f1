// `--probe`: what the kernel offers, found without mounting, one line per
// feature with the reason when it is absent; it leaves nothing behind.
import assert from "node:assert/strict";
import { probe } from "../../mod.ts";
import { bufferRingMissing } from "../../server/probe.ts";
import {
  canMount,
  isMounted,
  reap,
  run,
  startServer,
  tempMountpoint,
  uringMissing,
  uringTest,
} from "../helpers.ts";

const FEATURES = [
  "FUSE",
  "FUSE-over-io_uring",
  "kernel passthrough",
  "FUSE buffer pools",
  "FUSE pool zero-copy",
  "io_uring",
  "fixed buffers (sparse table)",
  "MSG_RING",
  "provided buffer rings",
  "kernel-managed buffer rings",
  "FUSE buffer ring",
  "FUSE zero-copy",
];

function openFds(): number {
  return [...Deno.readDirSync("/proc/self/fd")].length;
}

Deno.test({
  name: "probe: every feature once, in order, the reason when absent; nothing left open",
  ignore: !canMount,
  fn() {
    const before = openFds();
    const lines = probe();
    assert.deepEqual(lines.map((l) => l.feature), FEATURES);
    assert.equal(openFds(), before);
    const by = Object.fromEntries(lines.map((l) => [l.feature, l]));
    assert.equal(by["FUSE"].available, true);
    assert.equal(by["FUSE-over-io_uring"].available, uringMissing === null);
    // Root here: this process may make backing files.
    assert.equal(by["kernel passthrough"].available, true);
    for (const l of lines) assert.ok(l.detail.length > 0, l.feature);
    // Buffer pools are what a throwaway connection's INIT says (the 7.3 guest says yes);
    // asking mounted something for a moment and left nothing behind.
    const pools = by["FUSE buffer pools"];
    if (!pools.available) {
      assert.match(
        pools.detail,
        uringMissing === null ? /did not offer FUSE_HAS_IO_URING_BUFPOOL at INIT/ : /enable_uring/,
      );
      assert.equal(by["FUSE pool zero-copy"].available, false);
    }
    assert.doesNotMatch(Deno.readTextFileSync("/proc/self/mountinfo"), /denofuse-probe/);
    const left = [...Deno.readDirSync("/tmp")].filter((e) => e.name.startsWith("denofuse-probe-"));
    assert.deepEqual(left, []);
    // The buffer-ring modes follow from the kernel-managed ring.
    const kmbuf = by["kernel-managed buffer rings"].available;
    assert.equal(by["FUSE buffer ring"].available, kmbuf);
    assert.equal(by["FUSE zero-copy"].available, kmbuf);
    if (!kmbuf) {
      assert.match(by["kernel-managed buffer rings"].detail, /\(38\): E[A-Z]+/);
      assert.match(by["FUSE zero-copy"].detail, /needs the FUSE buffer ring/);
    }
  },
});

Deno.test({
  name: "probe: --probe on the command line, with --allow-ffi only",
  ignore: !canMount,
  async fn() {
    const out = await run(
      Deno.execPath(),
      "run",
      "--allow-ffi",
      new URL("../../examples/passthrough.ts", import.meta.url).pathname,
      "--probe",
    );
    assert.equal(out.code, 0, out.stderr);
    const rows = out.stdout.trim().split("\n");
    assert.equal(rows.length, FEATURES.length);
    rows.forEach((row, i) =>
      assert.match(row, new RegExp(`^(yes|no ) {2}${FEATURES[i].replace(/[()]/g, "\\$&")} `))
    );
  },
});

uringTest("probe: with enable_uring off, says how to switch it on", async () => {
  const param = "/sys/module/fuse/parameters/enable_uring";
  const before = (await Deno.readTextFile(param)).trim();
  await Deno.writeTextFile(param, "N");
  try {
    const line = probe().find((l) => l.feature === "FUSE-over-io_uring")!;
    assert.equal(line.available, false);
    assert.match(line.detail, /echo Y > \/sys\/module\/fuse\/parameters\/enable_uring/);
  } finally {
    await Deno.writeTextFile(param, before);
  }
});

// On a kernel without the FUSE buffer-ring series (mainline, this machine's):
// auto serves in mainline mode, and asking for a buffer-ring mode fails with
// the probe's reason before anything is mounted. (guest/ covers the kernel
// that has the series.)
const noSeries = bufferRingMissing() !== null;

uringTest(
  "probe: without the series, auto serves mainline and a forced mode fails clearly",
  async () => {
    if (!noSeries) return; // this kernel carries the series: guest/ tests it
    const [mnt, cleanup] = await tempMountpoint();
    const hello = new URL("../../examples/hello.ts", import.meta.url).pathname;
    const helloWith = (opt: string) =>
      run(Deno.execPath(), "run", "--allow-ffi", hello, mnt, "-o", opt);
    try {
      const { child, out } = await startServer(["examples/hello.ts", mnt, "-o", "io_uring"]);
      assert.match(out, /over io_uring \(mainline\)/);
      child.kill("SIGTERM");
      assert.equal((await reap(child)).code, 0);
      // Buffer pools, asked of a throwaway connection before mounting.
      if (!probe().find((l) => l.feature === "FUSE buffer pools")!.available) {
        for (const opt of ["io_uring_bufpool", "io_uring_mode=bufpool_zero_copy"]) {
          const r = await helloWith(opt);
          assert.equal(r.code, 1, `${opt}: ${r.stdout}`);
          assert.match(
            r.stderr,
            /io_uring bufpool(_zero_copy)? mode: the kernel \(FUSE 7\.\d+\) did not offer FUSE_HAS_IO_URING_BUFPOOL at INIT/,
          );
          assert.equal(isMounted(mnt), false, opt);
        }
      }
      for (const opt of ["io_uring_zero_copy", "io_uring_bufring", "io_uring_mode=buf_ring"]) {
        const r = await helloWith(opt);
        assert.equal(r.code, 1, `${opt}: ${r.stdout}`);
        assert.match(
          r.stderr,
          /io_uring (zero_copy|buf_ring) mode: .*does not carry the FUSE buffer-ring series/,
        );
        assert.equal(isMounted(mnt), false, opt);
      }
      const bad = await helloWith("io_uring_mode=fast");
      assert.equal(bad.code, 2);
      assert.match(
        bad.stderr,
        /io_uring_mode takes auto, bufpool_zero_copy, bufpool, zero_copy, buf_ring or mainline/,
      );
    } finally {
      await cleanup();
    }
  },
);
