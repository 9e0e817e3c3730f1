// The buffer-pool modes of Linux 7.3 (FUSE 7.46: io_uring buffer pools and
// zero-copy, the seeds' series as it reached mainline): run in the mainline
// kernel's QEMU guest by scripts/mainline.sh (`deno task test:guest`). Each
// test mounts the passthrough as a user would, with kernel passthrough off
// (with it, file data never reaches a ring), moves data through the mount
// with ordinary tools and Deno's fs API, compares it with the source, and
// reads the server's counters from its debug log to see that the mode
// carried it: payloads at pool offsets, file data between the backing file
// and the client's own pages with zero-copy, and none through the server.
import assert from "node:assert/strict";
import { probeBufferPools } from "../../server/pool_probe.ts";
import type { SessionCounters } from "../../server/session.ts";
import { run, sh, startServer, stopServer, tempMountpoint, waitFor } from "../../tests/helpers.ts";
import {
  cmp,
  exercise,
  guestTests,
  killMidRead,
  notifyRetrieve,
  serveHello,
  withMode,
} from "../exercise.ts";

const pools = probeBufferPools();
const guestTest = guestTests(
  pools.pools && pools.zeroCopy ? null : `${pools.detail}; ${pools.zeroCopyDetail}`,
  "the mainline 7.3 kernel's guest (scripts/mainline.sh test)",
);

/** File data bytes `exercise` moves through the mount at the least (reads and writes). */
const EXERCISED_BYTES = 4 * 3_000_017;

function checkPoolCounters(mode: "bufpool" | "bufpool_zero_copy", c: SessionCounters): void {
  const u = c.uring!;
  const all = JSON.stringify(u);
  assert.ok(u.requests > 500, `requests ${u.requests}`);
  assert.equal(u.replies, u.requests);
  // Payloads came at the offsets the kernel named in its pools; no buffer ring, no entry slots.
  assert.ok(u.poolPayloads > 100, all);
  assert.equal(u.bufferSelects + u.bufferKept, 0, all);
  if (mode === "bufpool") {
    assert.ok(u.fixedReads > 0 && u.fixedWrites > 0, all);
    assert.equal(u.zeroCopyReads + u.zeroCopyWrites + u.bytesZeroCopy, 0, all);
    assert.ok(u.bytesThroughServer >= EXERCISED_BYTES, all);
  } else {
    // Every byte of file data went between the backing file and the client's pages...
    assert.ok(u.zeroCopyReads > 0 && u.zeroCopyWrites > 0, all);
    assert.ok(u.bytesZeroCopy >= EXERCISED_BYTES, all);
    // ...and none through the server's memory: nothing staged, nothing copied.
    assert.equal(u.fixedReads + u.fixedWrites + u.staged + u.bytesThroughServer, 0, all);
  }
}

for (const mode of ["bufpool", "bufpool_zero_copy"] as const) {
  for (const threads of [1, 2]) {
    guestTest(
      `guest 7.3: ${mode} mode, ${threads} thread(s): data through the mount equals the source`,
      async () => checkPoolCounters(mode, await withMode(mode, threads, exercise)),
    );
  }
}

guestTest(
  "guest 7.3: a pool of 2 buffers serves 8 entries: requests wait for a buffer, none is lost",
  async () => {
    for (const mode of ["bufpool", "bufpool_zero_copy"] as const) {
      const c = await withMode(mode, 1, async (mnt, src) => {
        await Deno.mkdir(`${src}/dir`);
        await sh(
          `for i in $(seq 24); do head -c $((1000000 + i * 9973)) /dev/urandom > ${src}/dir/f$i; done`,
        );
        const expected = await sh(`cd ${src}/dir && cat $(ls | sort) | md5sum`);
        // 8 clients at once on a depth of 8 (O_DIRECT: every read reaches the server).
        const sums = await sh(
          `for i in 1 2 3 4 5 6 7 8; do (cd ${mnt}/dir && ls | sort | ` +
            `xargs -I{} dd if={} bs=1M iflag=direct status=none | md5sum) & done; wait`,
        );
        assert.deepEqual(sums.trim().split("\n"), Array(8).fill(expected.trim()));
        await sh(`cp -r ${src}/dir ${mnt}/copy`);
        await cmp(`${src}/dir/f24`, `${src}/copy/f24`);
      }, ",io_uring_bufpool_buffers=2");
      assert.ok(c.uring!.poolPayloads > 24, JSON.stringify(c.uring));
    }
  },
);

guestTest(
  "guest 7.3: buffer-pool modes serve a FileSystem that makes its data (hello), 1 and 2 threads",
  async () => {
    for (const mode of ["bufpool", "bufpool_zero_copy"] as const) {
      await serveHello(mode, (c) => {
        const u = c.uring!;
        // hello's opens are not fd-backed: no client pages, its bytes go out through the pool
        // (the LOOKUP's name came in a pool buffer).
        assert.ok(u.poolPayloads >= 1, JSON.stringify(u));
        assert.equal(u.zeroCopyReads + u.zeroCopyWrites + u.staged, 0, JSON.stringify(u));
      });
    }
  },
);

guestTest(
  "guest 7.3: kill -9 of a bufpool_zero_copy server leaves no client hung; it mounts again",
  () => killMidRead("io_uring_bufpool_zero_copy"),
);

for (const mode of ["bufpool", "bufpool_zero_copy"] as const) {
  for (const threads of [1, 2]) {
    guestTest(
      `guest 7.3: ${mode}, ${threads} thread(s): notify retrieve reads back what the kernel caches`,
      () => notifyRetrieve(mode, threads),
    );
  }
}

guestTest(
  "guest 7.3: --probe says yes to buffer pools and zero-copy; auto picks them",
  async () => {
    // Bounded, so that a probe that hangs fails here and says so.
    const r = await run(
      "timeout",
      "-k",
      "5",
      "60",
      Deno.execPath(),
      "run",
      "--allow-ffi",
      "examples/passthrough.ts",
      "--probe",
    );
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      /^yes\s+FUSE buffer pools\s+FUSE 7\.46 offered FUSE_HAS_IO_URING_BUFPOOL/m,
    );
    assert.match(r.stdout, /^yes\s+FUSE pool zero-copy\s+ADD_QUEUE made a zero-copy queue/m);
    // auto, as root: zero-copy over pools, with -d saying why not the seeds' modes.
    const [mnt, cleanup] = await tempMountpoint();
    try {
      const { child, out } = await startServer(["examples/hello.ts", mnt, "-o", "io_uring", "-d"]);
      const log = new Response(child.stderr).text();
      assert.match(out, /over io_uring \(bufpool_zero_copy\)/);
      assert.equal(await stopServer(child, "SIGTERM", log), 0);
      assert.match(await log, /io_uring: not zero_copy: .*FUSE buffer-ring series/);
    } finally {
      await cleanup();
    }
    // A user without CAP_SYS_ADMIN: auto leaves zero-copy out, and the pool serves.
    await serveAsUser();
  },
);

/** hello mounted through fusermount3 by an ordinary user (setpriv), in auto mode: bufpool. */
async function serveAsUser(): Promise<void> {
  const [mnt, cleanup] = await tempMountpoint();
  const home = await Deno.makeTempDir({ prefix: "denofuse-user-" });
  // The guest's devtmpfs makes /dev/fuse 0600; a distribution's udev makes it 0666.
  const fuseMode = (await Deno.stat("/dev/fuse")).mode! & 0o777;
  try {
    await sh(`chmod 777 ${mnt} ${home} && chmod 666 /dev/fuse`);
    const user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
    const hello = new URL("../../examples/hello.ts", import.meta.url).pathname;
    const child = new Deno.Command(user[0], {
      args: [
        ...user.slice(1),
        "env",
        `DENO_DIR=${home}`,
        Deno.execPath(),
        "run",
        "--allow-ffi",
        hello,
        mnt,
        "-o",
        "io_uring",
        "-d",
      ],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const out = new Response(child.stdout).text();
    const log = new Response(child.stderr).text();
    try {
      // Only its user may enter a mount without allow_other.
      await waitFor(
        async () =>
          (await run(user[0], ...user.slice(1), "timeout", "20", "cat", `${mnt}/hello`))
            .stdout === "Hello, World!\n",
        120_000,
      ).catch(async (e) => {
        throw new Error(`${e.message}: the user's server logged:\n${await stopped(child, log)}`);
      });
      assert.equal(await stopServer(child, "SIGTERM", log), 0);
    } finally {
      try {
        child.kill("SIGKILL");
      } catch { /* ended */ }
      await child.status;
    }
    assert.match(await out, /over io_uring \(bufpool\)/);
    assert.match(await log, /io_uring: not bufpool_zero_copy: zero-copy needs CAP_SYS_ADMIN/);
  } finally {
    await Deno.chmod("/dev/fuse", fuseMode);
    await cleanup();
    await Deno.remove(home, { recursive: true });
  }
}

/** The end of a server's log, once it is stopped (killed if SIGTERM does not end it). */
async function stopped(child: Deno.ChildProcess, log: Promise<string>): Promise<string> {
  await stopServer(child, "SIGTERM", log, 20_000).catch(() => {});
  return (await log).slice(-3000);
}
