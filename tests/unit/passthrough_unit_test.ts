// The passthrough's inode table and checks, called directly (no mount):
// names that try to climb out, stale node ids, FORGET, access().
import assert from "node:assert/strict";
import { Passthrough } from "../../examples/passthrough.ts";
import { FuseError } from "../../ops/error.ts";
import { Errno, SystemError } from "../../ffi/errno.ts";
import type { RequestContext } from "../../ops/filesystem.ts";
import { DirectIo } from "../../server/io/direct_io.ts";

const ctx = (uid = 0, gid = 0): RequestContext => ({
  unique: 1,
  uid,
  gid,
  pid: 1,
  killSuidgid: false,
  signal: new AbortController().signal,
  io: new DirectIo(),
});

/** Matches a FuseError or SystemError carrying errno `code`. */
function errno(code: keyof typeof Errno) {
  return (e: unknown) =>
    (e instanceof FuseError || e instanceof SystemError) && e.errno === Errno[code];
}

Deno.test("passthrough (direct): names stay inside the source; stale ids and FORGET", async () => {
  const outer = await Deno.makeTempDir();
  try {
    await Deno.mkdir(`${outer}/src/sub`, { recursive: true });
    await Deno.writeTextFile(`${outer}/secret`, "outside");
    await Deno.symlink("../secret", `${outer}/src/up`);
    const fs = new Passthrough(`${outer}/src`);
    const root = await fs.getattr(ctx(), 1);
    // ".." of the root is the root; names with a slash are refused.
    const dotdot = await fs.lookup(ctx(), 1, "..");
    assert.equal(dotdot.nodeId, 1);
    assert.equal(dotdot.attr.ino, root.ino);
    await assert.rejects(fs.lookup(ctx(), 1, "../secret"), errno("EINVAL"));
    await assert.rejects(fs.lookup(ctx(), 1, "sub/../../secret"), errno("EINVAL"));
    // A symlink pointing out is a symlink: looked up, never followed.
    const up = await fs.lookup(ctx(), 1, "up");
    assert.equal(up.attr.mode & 0o170000, 0o120000);
    assert.equal(new TextDecoder().decode(await fs.readlink(ctx(), up.nodeId)), "../secret");
    await assert.rejects(fs.open(ctx(), up.nodeId, 0), errno("ELOOP"));
    // Lookups count; FORGET of all of them releases the held fd, and the id goes stale.
    const held = fs.heldInodes;
    const a = await fs.lookup(ctx(), 1, "sub");
    const b = await fs.lookup(ctx(), 1, "sub");
    assert.equal(a.nodeId, b.nodeId);
    assert.equal(fs.heldInodes, held + 1);
    fs.forget(a.nodeId, 1);
    assert.equal(fs.heldInodes, held + 1);
    fs.forget(a.nodeId, 1);
    assert.equal(fs.heldInodes, held);
    await assert.rejects(async () => await fs.getattr(ctx(), a.nodeId), errno("ESTALE"));
    await assert.rejects(fs.lookup(ctx(), 12345, "x"), errno("ESTALE"));
    // A fresh lookup gets a new id: ids are never reused.
    assert.ok((await fs.lookup(ctx(), 1, "sub")).nodeId > a.nodeId);
    fs.destroy();
  } finally {
    await Deno.remove(outer, { recursive: true });
  }
});

Deno.test({
  name: "passthrough (direct): access() answers from the modes, per caller (as root: it chowns)",
  // Files of other owners can only be made by root; CI runs as root.
  ignore: Deno.uid() !== 0 && Deno.env.get("CI") !== "true",
}, async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/f`, "");
    await Deno.chmod(`${dir}/f`, 0o640);
    await Deno.chown(`${dir}/f`, 1000, 2000);
    const fs = new Passthrough(dir);
    const f = (await fs.lookup(ctx(), 1, "f")).nodeId;
    const R = 4, W = 2, X = 1;
    await fs.access(ctx(1000, 1), f, R | W); // owner: rw-
    await assert.rejects(fs.access(ctx(1000, 1), f, X), errno("EACCES"));
    await fs.access(ctx(7, 2000), f, R); // group: r--
    await assert.rejects(fs.access(ctx(7, 2000), f, W), errno("EACCES"));
    await assert.rejects(fs.access(ctx(7, 7), f, R), errno("EACCES")); // other: ---
    await fs.access(ctx(7, 7), f, 0); // F_OK
    await fs.access(ctx(0, 0), f, R | W); // root reads and writes
    await assert.rejects(fs.access(ctx(0, 0), f, X), errno("EACCES")); // but no x bit at all
    fs.destroy();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("passthrough (direct): handles it never issued, FIFOs and special files never block or leak", async () => {
  const dir = await Deno.makeTempDir();
  const fs = new Passthrough(dir);
  try {
    // Bogus and released handles: EBADF, and no fd of the process is touched.
    const probe = Deno.openSync(`${dir}/probe`, { write: true, create: true });
    probe.close();
    for (const fh of [0, 1, 2, 3, 1000, 2 ** 40]) {
      assert.throws(() => fs.read(ctx(), 1, fh, 0, 10), errno("EBADF"));
      await assert.rejects(async () => await fs.release(ctx(), 1, fh), errno("EBADF"));
      assert.throws(() => fs.releasedir(ctx(), 1, fh), errno("EBADF"));
    }
    const f = await fs.lookup(ctx(), 1, "probe");
    const { fh } = await fs.open(ctx(), f.nodeId, 0);
    assert.equal(fs.read(ctx(), f.nodeId, fh!, 0, 1).fd, fh);
    await fs.release(ctx(), f.nodeId, fh!);
    await assert.rejects(async () => await fs.release(ctx(), f.nodeId, fh!), errno("EBADF"));
    const d = await fs.opendir(ctx(), 1);
    fs.releasedir(ctx(), 1, d.fh!);
    assert.throws(() => fs.releasedir(ctx(), 1, d.fh!), errno("EBADF"));
    // OPEN of a FIFO (the kernel never sends one) is refused rather than
    // blocking the serving thread; CREATE over one made behind the kernel's back
    // does not block either.
    const mk = await new Deno.Command("mkfifo", { args: [`${dir}/fifo`] }).output();
    assert.ok(mk.success);
    const fifo = await fs.lookup(ctx(), 1, "fifo");
    await assert.rejects(fs.open(ctx(), fifo.nodeId, 0), errno("EINVAL"));
    const created = await fs.create(ctx(), 1, "fifo", 0o644, 0);
    await fs.release(ctx(), created.entry.nodeId, created.fh!);
  } finally {
    fs.destroy();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("passthrough (direct): the fd count stays flat over 100,000 lookup/forget cycles", async () => {
  const dir = await Deno.makeTempDir();
  const fs = new Passthrough(dir);
  const fds = () => [...Deno.readDirSync("/proc/self/fd")].length;
  try {
    for (let i = 0; i < 16; i++) await Deno.writeTextFile(`${dir}/f${i}`, "x");
    const before = fds();
    for (let i = 0; i < 100_000; i++) {
      const name = `f${i % 16}`;
      const a = await fs.lookup(ctx(), 1, name);
      const b = await fs.lookup(ctx(), 1, name); // the same node, counted twice
      assert.equal(a.nodeId, b.nodeId);
      fs.forget(a.nodeId, 2);
      if (i % 1000 === 0) await assert.rejects(fs.lookup(ctx(), 1, "missing"), errno("ENOENT"));
    }
    assert.equal(fds(), before);
    assert.equal(fs.heldInodes, 1); // the root alone
  } finally {
    fs.destroy();
    await Deno.remove(dir, { recursive: true });
  }
});
