// examples/memfs.ts: through the test kit (no mount), and on a real mount
// with ordinary tools, compared with the same steps on a tmpfs directory.
import assert from "node:assert/strict";
import { MemFs } from "../../examples/memfs.ts";
import { Errno, FuseError, S } from "../../mod.ts";
import { TestSession } from "../../testing.ts";
import {
  killServer,
  reap,
  run,
  sh,
  startServer,
  tempMountpoint,
  transportTest,
} from "../helpers.ts";

const text = new TextEncoder();

Deno.test("memfs (test kit): files, directories, renames and links", async () => {
  const t = await TestSession.start(new MemFs());
  const d = await t.mkdir(1, "d", 0o750);
  assert.equal(d.attr.mode, S.IFDIR | 0o750);
  const f = await t.create(d.nodeId, "f", 0o640);
  assert.equal(await t.write(f.nodeId, f.fh, 5, text.encode("hello")), 5);
  assert.deepEqual(await t.read(f.nodeId, f.fh, 0, 100), text.encode("\0\0\0\0\0hello"));
  await t.release(f.nodeId, f.fh);
  await t.rename(d.nodeId, "f", 1, "g");
  assert.deepEqual((await t.readdir(1)).map((e) => e.name), [".", "..", "d", "g"]);
  assert.equal((await t.lookup(1, "g")).attr.size, 10);
  await assert.rejects(
    t.lookup(d.nodeId, "f"),
    (e) => e instanceof FuseError && e.errno === Errno.ENOENT,
  );
  await assert.rejects(t.mkdir(1, "d"), (e) => e instanceof FuseError && e.errno === Errno.EEXIST);
  await t.unlink(1, "g");
  assert.deepEqual((await t.readdir(1)).map((e) => e.name), [".", "..", "d"]);
});

transportTest("memfs: ordinary tools on a mount behave as on tmpfs", async (transport) => {
  const [mnt, cleanup] = await tempMountpoint();
  const ref = await Deno.makeTempDir({ prefix: "denofuse-ref-" });
  const { child } = await startServer([
    "examples/memfs.ts",
    mnt,
    "-o",
    transport === "io_uring" ? "io_uring" : "no_io_uring",
  ]);
  try {
    // The same script in the mount and in a plain directory.
    const script = (dir: string) =>
      sh(
        `cd ${dir} && head -c 3000000 /dev/zero | tr '\\0' x > big && cp /usr/bin/ls rand && ` +
          `cp -a /etc/apt apt && mkdir -p a/b/c && echo one > a/b/c/f && ln a/b/c/f hard && ln -s a/b/c/f soft && ` +
          `mv a/b/c a/c && mv -T a/c/f a/c/g && touch -d @1000000000 hard && touch -h -d @1100000000 soft && ` +
          `chmod 4755 hard && truncate -s 100 big && dd if=/dev/zero of=sparse bs=1 count=1 seek=5000000 status=none && ` +
          `mkfifo fifo && rm -r apt/apt.conf.d && ln -s dangling dl && cat a/c/g hard && readlink soft`,
      );
    assert.equal(await script(mnt), await script(ref));
    const listing = (dir: string) =>
      sh(
        // Directory sizes are each file system's own business.
        `cd ${dir} && find . -mindepth 1 \\( -type d -printf '%p %y %m %n\\n' \\) -o ` +
          `-printf '%p %y %m %n %s %l\\n' | sort && stat -c '%n %Y' hard soft`,
      );
    assert.equal(await listing(mnt), await listing(ref));
    // diff compares contents; the FIFO (compared by the listing) it only reports.
    const diff = await run("diff", "-r", "--no-dereference", "-x", "fifo", mnt, ref);
    assert.equal(diff.code, 0, diff.stdout + diff.stderr);
    child.kill("SIGTERM");
    assert.equal((await reap(child)).code, 0);
  } finally {
    await killServer(child);
    await cleanup();
    await Deno.remove(ref, { recursive: true });
  }
});
