// The passthrough example on a real mount, on each transport, driven with
// ordinary tools and Deno's fs API, and compared with the backing directory.
import assert from "node:assert/strict";
import { dataPathArgs, dataPathTest, run, sh, transportTest, withPassthrough } from "../helpers.ts";

const repo = new URL("../..", import.meta.url).pathname;

function bytes(n: number, seed = 1): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) out[i] = (x = (x * 1103515245 + 12345) >>> 0) >>> 24;
  return out;
}

// As root the passthrough hands file data to the kernel (FUSE_PASSTHROUGH);
// -o nopassthrough serves it from the server: both must round-trip.
dataPathTest(
  "passthrough: data round trips match the backing files",
  (transport, data) =>
    withPassthrough(transport, async (mnt, src) => {
      const cases: [string, Uint8Array][] = [
        ["empty", new Uint8Array(0)],
        ["one", new Uint8Array([42])],
        ["odd", bytes(12345)],
        ["big", bytes(3 * 1024 * 1024 + 17)],
      ];
      for (const [name, data] of cases) {
        await Deno.writeFile(`${mnt}/${name}`, data);
        assert.deepEqual(await Deno.readFile(`${src}/${name}`), data, name);
        assert.deepEqual(await Deno.readFile(`${mnt}/${name}`), data, name);
      }
      // Unaligned overwrite, append, and a sparse file with a hole.
      const f = await Deno.open(`${mnt}/odd`, { write: true });
      await f.seek(4097, Deno.SeekMode.Start);
      await f.write(new TextEncoder().encode("middle"));
      f.close();
      await Deno.writeFile(`${mnt}/odd`, new TextEncoder().encode("tail"), { append: true });
      assert.deepEqual(await Deno.readFile(`${mnt}/odd`), await Deno.readFile(`${src}/odd`));
      await sh(`dd if=/dev/urandom of=${mnt}/sparse bs=4096 count=1 seek=1000 status=none`);
      assert.equal((await Deno.stat(`${src}/sparse`)).size, 1001 * 4096);
      assert.equal(await sh(`cmp ${mnt}/sparse ${src}/sparse && echo same`), "same\n");
      const blocks = await sh(`stat -c %b ${src}/sparse`);
      assert.ok(Number(blocks) < 100, `sparse file uses ${blocks} blocks`);
      // fio writes and verifies with direct I/O through the mount.
      await sh(
        `fio --name=v --filename=${mnt}/fio.bin --rw=randwrite --bs=4k --size=8M --direct=1 ` +
          `--ioengine=sync --verify=crc32c --do_verify=1 --verify_state_save=0 --output=/dev/null`,
      );
      assert.equal(await sh(`cmp ${mnt}/fio.bin ${src}/fio.bin && echo same`), "same\n");
    }, dataPathArgs(data)),
);

transportTest(
  "passthrough: metadata, links and renames match the backing directory",
  (transport) =>
    withPassthrough(transport, async (mnt, src) => {
      await Deno.writeTextFile(`${mnt}/f`, "content");
      await Deno.chmod(`${mnt}/f`, 0o640);
      await Deno.chown(`${mnt}/f`, 1234, 5678);
      await Deno.truncate(`${mnt}/f`, 3); // before utime: truncating sets mtime
      await Deno.utime(`${mnt}/f`, 1_000_000_000, 1_100_000_000.5);
      const fmt = "%a %u %g %s %h %X %Y %y";
      assert.equal(await sh(`stat -c '${fmt}' ${mnt}/f`), await sh(`stat -c '${fmt}' ${src}/f`));
      assert.match(await sh(`stat -c '%a %u %g %s %Y' ${src}/f`), /^640 1234 5678 3 1100000000\n$/);

      await Deno.link(`${mnt}/f`, `${mnt}/g`);
      assert.equal((await Deno.stat(`${mnt}/f`)).nlink, 2);
      assert.equal((await Deno.stat(`${src}/g`)).ino, (await Deno.stat(`${src}/f`)).ino);
      await Deno.remove(`${mnt}/g`);
      assert.equal((await Deno.stat(`${mnt}/f`)).nlink, 1);

      await Deno.mkdir(`${mnt}/a/b`, { recursive: true });
      await Deno.writeTextFile(`${mnt}/x`, "x");
      await Deno.writeTextFile(`${mnt}/a/b/y`, "y");
      await Deno.rename(`${mnt}/x`, `${mnt}/a/b/y`); // over an existing file, across directories
      assert.equal(await Deno.readTextFile(`${src}/a/b/y`), "x");
      await assert.rejects(Deno.stat(`${src}/x`));
      await Deno.symlink("a/b/y", `${mnt}/link`);
      assert.equal(await Deno.readLink(`${mnt}/link`), "a/b/y");
      assert.equal(await Deno.readLink(`${src}/link`), "a/b/y");
      assert.equal(await Deno.readTextFile(`${mnt}/link`), "x");
      await sh(`mkfifo ${mnt}/fifo`);
      assert.equal(await sh(`stat -c %F ${src}/fifo`), "fifo\n");
      // The same tree, seen both ways.
      const list = (dir: string) => sh(`cd ${dir} && find . -printf '%p %y %m %s %n\\n' | sort`);
      assert.equal(await list(mnt), await list(src));
    }),
);

transportTest(
  "passthrough: 10,000 entries are listed completely and exactly once",
  (transport) =>
    withPassthrough(transport, async (mnt, src) => {
      await sh(`mkdir ${src}/many && cd ${src}/many && seq -f 'entry-%05g' 1 10000 | xargs touch`);
      const names = (await sh(`ls -f ${mnt}/many`)).trim().split("\n").filter((n) =>
        n !== "." && n !== ".."
      );
      assert.equal(names.length, 10000);
      assert.equal(new Set(names).size, 10000);
      const viaDeno: string[] = [];
      for await (const e of Deno.readDir(`${mnt}/many`)) viaDeno.push(e.name);
      assert.equal(viaDeno.length, 10000);
      assert.equal(await sh(`ls -l ${mnt}/many | wc -l`), "10001\n");
    }),
  120_000,
);

transportTest(
  "passthrough: cp -a, tar and git work inside the mount",
  (transport) =>
    withPassthrough(transport, async (mnt, src) => {
      await sh(
        `cp -a ${repo}ops ${mnt}/ops && diff -r ${repo}ops ${mnt}/ops && diff -r ${repo}ops ${src}/ops`,
      );
      const out = await Deno.makeTempDir();
      try {
        await sh(`cp -a ${mnt}/ops ${out}/ops && diff -r ${repo}ops ${out}/ops`);
        await sh(
          `tar -C ${repo} -cf ${out}/t.tar ffi ops server && mkdir ${mnt}/untar && tar -C ${mnt}/untar -xf ${out}/t.tar`,
        );
        await sh(`for d in ffi ops server; do diff -r ${repo}$d ${mnt}/untar/$d; done`);
      } finally {
        await Deno.remove(out, { recursive: true });
      }
      await sh(
        `cd ${mnt} && git init -q g && cd g && echo hello > f && git add f && ` +
          `git -c user.name=t -c user.email=t@t commit -qm one && git log --oneline | wc -l`,
      );
      assert.equal(
        await sh(`cd ${src}/g && git fsck --no-progress 2>&1 && git show HEAD:f`),
        "hello\n",
      );
    }),
  120_000,
);

transportTest(
  "passthrough: the server never follows a symlink out of the source",
  (transport) =>
    withPassthrough(transport, async (mnt, src) => {
      const outside = await Deno.makeTempDir({ prefix: "denofuse-outside-" });
      try {
        await Deno.writeTextFile(`${outside}/secret`, "outside");
        await Deno.symlink(outside, `${src}/out`);
        await Deno.symlink(`${outside}/secret`, `${src}/secretlink`);
        // Looked up through the mount, both are symlinks, with their targets as text.
        assert.ok((await Deno.lstat(`${mnt}/out`)).isSymlink);
        assert.equal(await Deno.readLink(`${mnt}/secretlink`), `${outside}/secret`);
        // Operations on the symlink node act on the link itself, not its target.
        const before = await sh(`stat -c %a ${outside}/secret`);
        const chmod = await run("chmod", "-h", "000", `${mnt}/secretlink`);
        assert.equal(await sh(`stat -c %a ${outside}/secret`), before, chmod.stderr);
        // Names that would climb out never reach the backing file system.
        assert.equal((await run("stat", `${mnt}/../${mnt.split("/").pop()}/out`)).code, 0);
        await assert.rejects(Deno.stat(`${mnt}/out/../../etc/shadow-not-here`));
      } finally {
        await Deno.remove(outside, { recursive: true });
      }
    }),
);
