// The public test kit (testing.ts): file systems tested with real requests
// and decoded replies, without root, /dev/fuse or a mount.
import assert from "node:assert/strict";
import { Opcode, TestSession } from "../../testing.ts";
import { hello } from "../../examples/hello.ts";
import { Passthrough } from "../../fs/passthrough.ts";
import { Errno, FuseError, S } from "../../mod.ts";

Deno.test("testing kit: hello answers lookup, getattr, open, read and readdir", async () => {
  const t = await TestSession.start(hello);
  const file = await t.lookup(1, "hello");
  assert.equal(file.attr.mode, S.IFREG | 0o444);
  assert.equal((await t.getattr(file.nodeId)).size, 14);
  const { fh } = await t.open(file.nodeId);
  assert.equal(new TextDecoder().decode(await t.read(file.nodeId, fh, 0, 100)), "Hello, World!\n");
  assert.deepEqual((await t.readdir(1)).map((e) => e.name), [".", "..", "hello"]);
  await assert.rejects(
    t.lookup(1, "missing"),
    (e) => e instanceof FuseError && e.errno === Errno.ENOENT,
  );
  await assert.rejects(
    t.open(file.nodeId, 1 /* O_WRONLY */),
    (e) => e instanceof FuseError && e.errno === Errno.EACCES,
  );
  const raw = await t.exchange(99999, 1);
  await assert.rejects(
    t.request(99999, 1),
    (e) => e instanceof FuseError && e.errno === Errno.ENOSYS,
  );
  assert.equal(raw?.error, -Errno.ENOSYS);
});

Deno.test("testing kit: the passthrough creates, writes, renames and lists through the dispatcher", async () => {
  const dir = await Deno.makeTempDir();
  const fs = new Passthrough(dir);
  try {
    const t = await TestSession.start(fs);
    const sub = await t.mkdir(1, "sub");
    const f = await t.create(sub.nodeId, "f");
    assert.equal(await t.write(f.nodeId, f.fh, 0, new TextEncoder().encode("written")), 7);
    await t.release(f.nodeId, f.fh);
    assert.equal(await Deno.readTextFile(`${dir}/sub/f`), "written");
    await t.rename(sub.nodeId, "f", 1, "g");
    const names = (await t.readdir(1)).map((e) => e.name).sort();
    assert.deepEqual(names, [".", "..", "g", "sub"]);
    const g = await t.lookup(1, "g");
    assert.equal(g.attr.size, 7);
    const { fh } = await t.open(g.nodeId);
    assert.equal(new TextDecoder().decode(await t.read(g.nodeId, fh, 3, 10)), "tten");
    await t.release(g.nodeId, fh);
    await t.unlink(1, "g");
    await assert.rejects(Deno.stat(`${dir}/g`));
  } finally {
    fs.destroy();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("testing kit: readlink, statfs, xattrs, readdirplus and readdir from an offset", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${dir}/a`, "aa");
  await Deno.symlink("a", `${dir}/link`);
  await Deno.mkdir(`${dir}/d`);
  const fs = new Passthrough(dir);
  try {
    const t = await TestSession.start(fs);
    const link = await t.lookup(1, "link");
    assert.equal(await t.readlink(link.nodeId), "a");
    const st = await t.statfs();
    assert.ok(st.bsize > 0 && st.blocks > 0 && st.namelen === 255, JSON.stringify(st));
    const a = await t.lookup(1, "a");
    const value = new TextEncoder().encode("v1");
    await t.request(
      Opcode.SETXATTR,
      a.nodeId,
      new Uint8Array([2, 0, 0, 0, 0, 0, 0, 0]),
      "user.k",
      value,
    );
    assert.deepEqual(await t.getxattr(a.nodeId, "user.k"), value);
    assert.deepEqual(await t.listxattr(a.nodeId), ["user.k"]);
    await assert.rejects(
      t.getxattr(a.nodeId, "user.k", 1),
      (e) => e instanceof FuseError && e.errno === Errno.ERANGE,
    );
    // What the backing directory lists, with each name's attributes.
    const plus = await t.readdirplus(1);
    assert.deepEqual(plus.map((e) => e.name).sort(), [".", "..", "a", "d", "link"]);
    const d = plus.find((e) => e.name === "d")!;
    assert.equal(d.attr.mode & S.IFMT, S.IFDIR);
    assert.equal(d.nodeId, (await t.lookup(1, "d")).nodeId);
    // From an entry's offset: the entries after it.
    const all = await t.readdir(1);
    assert.deepEqual(
      (await t.readdir(1, all[1].off)).map((e) => e.name),
      all.slice(2).map((e) => e.name),
    );
  } finally {
    fs.destroy();
    await Deno.remove(dir, { recursive: true });
  }
});
