// POSIX semantics through the passthrough, on each transport, compared with
// the same operations on the backing tmpfs (or on the original tree).
import assert from "node:assert/strict";
import { check64, close, libc, O, open } from "../../ffi/libc.ts";
import { COPY_CHUNK } from "../../fs/passthrough.ts";
import { run, sh, transportTest, withPassthrough } from "../helpers.ts";

// l*xattr act on a symlink itself; Deno has no API for them.
const lx = Deno.dlopen("libc.so.6", {
  lsetxattr: { parameters: ["buffer", "buffer", "buffer", "usize", "i32"], result: "i32" },
  lgetxattr: { parameters: ["buffer", "buffer", "buffer", "usize"], result: "i64" },
  __errno_location: { parameters: [], result: "pointer" },
}).symbols;
const z = (s: string) => new TextEncoder().encode(s + "\0");
const errno = () => new Deno.UnsafePointerView(lx.__errno_location()!).getInt32(0);

/** `find` listing of a tree: path, type, mode, owner, size, mtime (symlinks themselves). */
function listing(root: string): Promise<string> {
  return sh(`cd ${root} && find . -printf '%p %y %m %U:%G %s %T@ %l\\n' | sort`);
}

transportTest(
  "posix: cp -a of a real tree copies everything, symlink times included",
  (transport) =>
    withPassthrough(transport, async (mnt, src) => {
      // The README's suggestion: it used to fail once per symlink (times).
      const cp = await run("cp", "-a", "/etc/.", `${mnt}/etc`);
      assert.equal(cp.stderr, "", "cp -a printed errors");
      assert.equal(cp.code, 0);
      const diff = await run("diff", "-r", "--no-dereference", "/etc", `${mnt}/etc`);
      assert.equal(diff.code, 0, diff.stdout + diff.stderr);
      const original = await listing("/etc");
      const links = original.split("\n").filter((l) => l.split(" ")[1] === "l").length;
      assert.ok(links > 10, `/etc has ${links} symlinks`);
      assert.equal(await listing(`${mnt}/etc`), original);
      assert.equal(await listing(`${src}/etc`), original);
    }),
  180_000,
);

transportTest(
  "posix: a symlink's times and xattrs are its own, as the backing file system allows",
  (transport) =>
    withPassthrough(transport, async (mnt, src) => {
      await Deno.writeTextFile(`${mnt}/target`, "t");
      await Deno.symlink("target", `${mnt}/link`);
      await Deno.symlink("target", `${src}/link2`); // the same calls straight on tmpfs
      const before = await sh(`stat -c '%Y' ${src}/target`);
      // touch -h: utimensat(AT_SYMLINK_NOFOLLOW), on the link only.
      await sh(`touch -h -d @1000000000 ${mnt}/link`);
      assert.equal(await sh(`stat -c '%Y' ${mnt}/link ${src}/link`), "1000000000\n".repeat(2));
      assert.equal(await sh(`stat -c '%Y' ${src}/target`), before);
      // trusted.* is allowed on a symlink (as root), user.* is not: tmpfs decides.
      for (const [name, want] of [["trusted.t", 0], ["user.u", -1]] as const) {
        const r = lx.lsetxattr(z(`${mnt}/link`), z(name), z("v"), 1n, 0);
        const mountErrno = r === 0 ? 0 : errno();
        const s = lx.lsetxattr(z(`${src}/link2`), z(name), z("v"), 1n, 0);
        assert.equal(r, want, `${name} on the mount`);
        assert.equal(s === 0 ? 0 : errno(), s === 0 ? 0 : mountErrno, `${name}: same errno`);
      }
      const buf = new Uint8Array(16);
      assert.equal(lx.lgetxattr(z(`${src}/link`), z("trusted.t"), buf, 16n), 1n);
      assert.equal(lx.lgetxattr(z(`${mnt}/link`), z("trusted.t"), buf, 16n), 1n);
      assert.equal(lx.lgetxattr(z(`${mnt}/target`), z("trusted.t"), buf, 16n), -1n);
    }),
);

transportTest(
  "posix: copy_file_range copies at most 4 MiB per call, and cp of a larger file loops to the end",
  (transport) =>
    withPassthrough(transport, async (mnt, src) => {
      const big = new Uint8Array(10 * 1024 * 1024 + 123).map((_, i) => (i * 7919) >>> 5);
      await Deno.writeFile(`${src}/big`, big);
      const from = open(`${mnt}/big`, O.RDONLY);
      const to = open(`${mnt}/copy`, O.WRONLY | O.CREAT, 0o644);
      try {
        const n = check64(
          libc.copy_file_range(from, null, to, null, BigInt(big.length), 0),
          "copy_file_range",
        );
        assert.equal(n, COPY_CHUNK); // short: the serving thread is not held for all of it
      } finally {
        close(from);
        close(to);
      }
      // cp loops over short copies as copy_file_range(2) allows.
      assert.equal((await run("cp", `${mnt}/big`, `${mnt}/copy`)).code, 0);
      assert.equal(await sh(`cmp ${src}/big ${src}/copy && echo same`), "same\n");
    }),
);
