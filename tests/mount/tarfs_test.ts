// examples/tarfs.ts: an archive made by GNU tar, mounted read-only, reads
// back as the tree it was made from (diff -r, cmp, O_DIRECT), with every
// member's data served from a window of the archive's fd by the session
// (the server's counters show the fd reads; `read` is never called).
import assert from "node:assert/strict";
import { TarFs } from "../../examples/tarfs.ts";
import { Errno, FuseError } from "../../mod.ts";
import { TestSession } from "../../testing.ts";
import { run, serveLogged, serverData, sh, tempMountpoint, transportTest } from "../helpers.ts";

/** A tree with what tar has to say something about, and its archive. */
async function archive(): Promise<{ dir: string; tree: string; tar: string }> {
  const dir = await Deno.makeTempDir({ prefix: "denofuse-tar-" });
  const tree = `${dir}/tree`;
  const long = "n".repeat(150);
  await sh(
    `mkdir -p ${tree}/sub/deeper && cd ${tree} && head -c 3000017 /dev/urandom > big && ` +
      `echo hello > sub/a && chmod 640 sub/a && ln -s ../big sub/link && ln big hard && ` +
      `: > empty && echo deep > sub/deeper/${long} && head -c 700 /dev/urandom > odd && ` +
      `cd .. && tar -cf a.tar -C tree .`,
  );
  return { dir, tree, tar: `${dir}/a.tar` };
}

/** A TarFs that counts its `read` calls. */
class CountingTarFs extends TarFs {
  reads = 0;
  override read(...args: Parameters<TarFs["read"]>) {
    this.reads++;
    return super.read(...args);
  }
}

Deno.test("tarfs (test kit): members read from windows of the archive, never through read", async () => {
  const { dir, tree, tar } = await archive();
  try {
    const fs = new CountingTarFs(tar);
    const t = await TestSession.start(fs);
    const sub = await t.lookup(1, "sub");
    const a = await t.lookup(sub.nodeId, "a");
    assert.equal(a.attr.mode & 0o777, 0o640);
    const { fh } = await t.open(a.nodeId);
    assert.equal(new TextDecoder().decode(await t.read(a.nodeId, fh, 0, 4096)), "hello\n");
    assert.equal((await t.read(a.nodeId, fh, 6, 4096)).length, 0); // at the end
    assert.equal(new TextDecoder().decode(await t.read(a.nodeId, fh, 2, 2)), "ll");
    const big = await t.lookup(1, "big");
    const opened = await t.open(big.nodeId);
    const expected = await Deno.readFile(`${tree}/big`);
    const tail = await t.read(big.nodeId, opened.fh, 3000017 - 17, 4096);
    assert.deepEqual(tail, expected.subarray(3000017 - 17));
    assert.equal(fs.reads, 0);
    assert.equal(await t.readlink((await t.lookup(sub.nodeId, "link")).nodeId), "../big");
    assert.equal((await t.lookup(1, "hard")).nodeId, big.nodeId);
    assert.equal(big.attr.nlink, 2);
    await assert.rejects(
      t.open(a.nodeId, 1 /* O_WRONLY */),
      (e) => e instanceof FuseError && e.errno === Errno.EROFS,
    );
    const names = (await t.readdir(sub.nodeId)).map((e) => e.name).sort();
    assert.deepEqual(names, [".", "..", "a", "deeper", "link"]);
    fs.destroy();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

for (const threads of [1, undefined]) {
  transportTest(
    `tarfs: the mounted archive is the tree it was made from (${
      threads ? "one thread" : "a thread per CPU"
    })`,
    async (transport) => {
      const { dir, tree, tar } = await archive();
      const [mnt, cleanup] = await tempMountpoint();
      const options = [transport === "io_uring" ? "io_uring" : "no_io_uring"];
      if (threads) options.push(`threads=${threads}`);
      try {
        const { counters } = await serveLogged(
          ["examples/tarfs.ts", tar, mnt, "-o", options.join(",")],
          async () => {
            assert.equal((await run("diff", "-r", tree, mnt)).code, 0);
            await sh(`dd if=${mnt}/big of=${dir}/direct bs=1M iflag=direct status=none`);
            assert.equal((await run("cmp", `${tree}/big`, `${dir}/direct`)).code, 0);
            assert.equal(
              await sh(`cd ${mnt} && stat -c '%n %a %h %s' big hard sub/a odd empty`),
              await sh(`cd ${tree} && stat -c '%n %a %h %s' big hard sub/a odd empty`),
            );
            const write = await run("sh", "-c", `echo x > ${mnt}/new`);
            assert.match(write.stderr, /Read-only file system/);
          },
        );
        // The data came from the archive's fd, read by the session.
        assert.ok(serverData(counters).reads > 0, JSON.stringify(counters));
      } finally {
        await cleanup();
        await Deno.remove(dir, { recursive: true });
      }
    },
  );
}

Deno.test("tarfs: its own -o options are in --help, checked, and given to the file system", async () => {
  const tarfs = (...args: string[]) =>
    run(Deno.execPath(), "run", "--allow-ffi", "examples/tarfs.ts", ...args);
  const help = await tarfs("--help");
  assert.match(help.stdout, /Options of examples\/tarfs\.ts \(-o\):\n\s+uid=N\s+show every member/);
  const bad = await tarfs("-o", "uid", "a.tar", "/mnt");
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /-o uid needs a value \(N\)/);
  assert.match((await tarfs("-o", "uid=x", "a.tar", "/mnt")).stderr, /-o uid takes a number/);
  const { dir, tar } = await archive();
  try {
    const fs = new TarFs(tar, { uid: 1234, gid: 4321 });
    const t = await TestSession.start(fs);
    for (const name of ["big", "sub"]) {
      const { attr } = await t.lookup(1, name);
      assert.deepEqual([attr.uid, attr.gid], [1234, 4321]);
    }
    fs.destroy();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
