// Large trees: past its fd budget (half the open-file limit) the passthrough
// keeps new nodes as file handles, so a 100,000-entry directory lists and
// stats with a fraction of the fds; where handles cannot be used (a FUSE
// source) and fds run out, only the requests that needed one fail.
import assert from "node:assert/strict";
import {
  dataPathArgs,
  dataPathTest,
  killServer,
  reap,
  run,
  sh,
  startServer,
  tempMountpoint,
  transportTest,
  waitFor,
} from "../helpers.ts";

const opt = (transport: string) => [
  "-o",
  transport === "io_uring" ? "io_uring,threads=1" : "no_io_uring,threads=1",
];

/** Open fds of process `pid`. */
function fdsOf(pid: number): number {
  return [...Deno.readDirSync(`/proc/${pid}/fd`)].length;
}

dataPathTest(
  "large tree: 100,000 entries list, stat and work through the mount on 10,000 fds",
  async (transport, data) => {
    const [mnt, cleanup] = await tempMountpoint();
    const src = await Deno.makeTempDir({ prefix: "denofuse-src-" });
    await sh(`cd ${src} && mkdir big && cd big && seq -f 'f%06g' 100000 | xargs touch`);
    const { child } = await startServer(
      ["examples/passthrough.ts", src, mnt, ...opt(transport), ...dataPathArgs(data)],
      ["prlimit", "--nofile=10000:10000"],
    );
    try {
      const ls = await run("sh", "-c", `ls -l ${mnt}/big | grep -c '^-rw'`);
      assert.equal(ls.stderr, "");
      assert.equal(ls.stdout.trim(), "100000");
      // Every node is still known to the kernel, yet the server holds few fds.
      const held = fdsOf(child.pid);
      assert.ok(held > LIMIT - 50, `${held} fds held`);
      assert.ok(held < 10000, `${held} fds open`);
      // Nodes kept as handles work like any other: stat, write, read, rename, unlink.
      assert.equal((await run("stat", "-c", "%s", `${mnt}/big/f099999`)).stdout, "0\n");
      await sh(`echo late > ${mnt}/big/f099998 && mv ${mnt}/big/f099997 ${mnt}/big/moved`);
      assert.equal(await Deno.readTextFile(`${mnt}/big/f099998`), "late\n");
      assert.equal(await Deno.readTextFile(`${src}/big/f099998`), "late\n");
      await Deno.remove(`${mnt}/big/f099996`);
      const listed = await run("sh", "-c", `ls ${src}/big | wc -l; ls ${src}/big/moved`);
      assert.equal(listed.stdout, `99999\n${src}/big/moved\n`);
      child.kill("SIGTERM");
      assert.equal((await reap(child)).code, 0);
    } finally {
      await killServer(child);
      await cleanup();
      await Deno.remove(src, { recursive: true });
    }
  },
  240_000,
);

const LIMIT = 1500;
const ENTRIES = 4000;

transportTest(
  `large tree: without file handles (a FUSE source) and ${LIMIT} fds, ${ENTRIES} entries list in full; only lookups beyond fail`,
  async (transport) => {
    const [inner, cleanInner] = await tempMountpoint();
    const [mnt, cleanup] = await tempMountpoint();
    const src = await Deno.makeTempDir({ prefix: "denofuse-src-" });
    await sh(`cd ${src} && mkdir big && cd big && seq -f 'f%05g' ${ENTRIES} | xargs touch`);
    await Deno.writeTextFile(`${src}/kept`, "still readable\n");
    const { child: first } = await startServer(["examples/passthrough.ts", src, inner]);
    const { child } = await startServer(
      ["examples/passthrough.ts", inner, mnt, ...opt(transport)],
      ["prlimit", `--nofile=${LIMIT}:${LIMIT}`],
    );
    try {
      const kept = await Deno.open(`${mnt}/kept`);
      // ls -l: READDIRPLUS takes an fd per entry until none are left, then
      // lists the rest without attributes; their own lookups get EMFILE.
      const ls = await run("ls", "-l", `${mnt}/big`);
      const names = ls.stdout.split("\n").filter((l) => / f\d{5}$/.test(l));
      const listed = names.filter((l) => l.startsWith("-rw")).length;
      const failed = [...ls.stderr.matchAll(/'([^']+)': Too many open files/g)].map((m) => m[1]);
      assert.equal(names.length, ENTRIES, "every name is listed");
      assert.ok(failed.length > 0, `the limit was never reached (${listed} listed)`);
      assert.ok(listed > LIMIT / 2, `only ${listed} listed with attributes`);
      assert.equal(listed + failed.length, ENTRIES, ls.stderr.slice(0, 500));
      // Other requests are unaffected: an open file reads, known names stat.
      const buf = new Uint8Array(100);
      const n = await kept.read(buf) ?? 0;
      assert.equal(new TextDecoder().decode(buf.subarray(0, n)), "still readable\n");
      kept.close();
      // Known names still resolve once their entries time out (1 s): the
      // kernel revalidates with LOOKUPs, which need no new fd.
      await new Promise((r) => setTimeout(r, 1100));
      const known = names.filter((l) => l.startsWith("-rw")).slice(-100).map((l) =>
        `${mnt}/big/${l.slice(-6)}`
      );
      const revalidated = await run("stat", "-c", "%n", ...known);
      assert.equal(revalidated.stderr, "");
      // Once the kernel forgets inodes (FORGET), their fds come back and the
      // names that failed resolve.
      const held = fdsOf(child.pid);
      assert.ok(held > LIMIT - 50, `${held} fds held`);
      await Deno.writeTextFile("/proc/sys/vm/drop_caches", "2");
      await waitFor(() => Promise.resolve(fdsOf(child.pid) < held - LIMIT / 2));
      const retried = await run("stat", "-c", "%n", ...failed.slice(0, 100));
      assert.equal(retried.stderr, "");
      const again = await run("sh", "-c", `ls -l ${mnt}/big 2>/dev/null | grep -c '^-rw'`);
      assert.ok(Number(again.stdout) > LIMIT / 2, again.stdout);
      child.kill("SIGTERM");
      assert.equal((await reap(child)).code, 0);
    } finally {
      for (const c of [child, first]) {
        try {
          c.kill("SIGTERM");
        } catch { /* gone */ }
        await reap(c);
      }
      await cleanup();
      await cleanInner();
      await Deno.remove(src, { recursive: true });
    }
  },
  120_000,
);
