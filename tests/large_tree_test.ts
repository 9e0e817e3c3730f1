// Large trees: the server raises its open-file limit, and when fds still run
// out only the request that needed one fails; listing never does.
import assert from "node:assert/strict";
import { reap, run, sh, startServer, tempMountpoint, transportTest } from "./helpers.ts";

const LIMIT = 1500;
const ENTRIES = 4000;

transportTest(
  `large tree: ${ENTRIES} entries under an fd limit of ${LIMIT} list in full; only lookups beyond it fail`,
  async (transport) => {
    const [mnt, cleanup] = await tempMountpoint();
    const src = await Deno.makeTempDir({ prefix: "denofuse-src-" });
    await sh(`cd ${src} && mkdir big && cd big && seq -f 'f%05g' ${ENTRIES} | xargs touch`);
    await Deno.writeTextFile(`${src}/kept`, "still readable\n");
    const { child } = await startServer(
      [
        "examples/passthrough.ts",
        src,
        mnt,
        "-o",
        transport === "io_uring" ? "io_uring,threads=1" : "no_io_uring,threads=1",
      ],
      ["prlimit", `--nofile=${LIMIT}:${LIMIT}`],
    );
    try {
      const kept = await Deno.open(`${mnt}/kept`);
      // ls -l: READDIRPLUS takes an fd per entry until none are left, then
      // lists the rest without attributes; their own lookups get EMFILE.
      const ls = await run("ls", "-l", `${mnt}/big`);
      const names = ls.stdout.split("\n").filter((l) => / f\d{5}$/.test(l));
      const listed = names.filter((l) => l.startsWith("-rw")).length;
      const failed = ls.stderr.split("\n").filter((l) => l.includes("Too many open files"))
        .length;
      assert.equal(names.length, ENTRIES, "every name is listed");
      assert.ok(failed > 0, "the limit was never reached");
      assert.ok(listed > LIMIT / 2, `only ${listed} listed with attributes`);
      assert.equal(listed + failed, ENTRIES, ls.stderr.slice(0, 500));
      assert.equal((await run("ls", `${mnt}/big`)).stdout.split("\n").length - 1, ENTRIES);
      // Other requests are unaffected: an open file reads, known names stat.
      const buf = new Uint8Array(100);
      assert.equal(
        new TextDecoder().decode(buf.subarray(0, await kept.read(buf) ?? 0)),
        "still readable\n",
      );
      kept.close();
      assert.equal((await run("stat", `${mnt}/big/f00001`)).code, 0);
      // Once the kernel forgets inodes, their fds come back and the rest resolve.
      await Deno.writeTextFile("/proc/sys/vm/drop_caches", "2");
      const again = await run("sh", "-c", `ls -l ${mnt}/big 2>/dev/null | grep -c '^-rw'`);
      assert.ok(Number(again.stdout) > listed / 2, again.stdout);
      child.kill("SIGTERM");
      assert.equal((await reap(child)).code, 0);
    } finally {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
      await reap(child);
      await cleanup();
      await Deno.remove(src, { recursive: true });
    }
  },
  120_000,
);
