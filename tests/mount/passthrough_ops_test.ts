// The passthrough's less common operations on a real mount, on each
// transport: rename flags, utimes with UTIME_NOW/OMIT, setattr through a
// handle, O_EXCL/O_TRUNC, special files, xattrs, fallocate and holes,
// copy_file_range, concurrency, FORGET, locks and multi-user ownership.
// System calls are made from this process with libc (the server runs in its
// own process), and results are compared with the backing directory.
import assert from "node:assert/strict";
import { AT, check, check64, close, cstr, libc, O, open, S } from "../../ffi/libc.ts";
import { SystemError } from "../../ffi/errno.ts";
import { run, sh, transportTest, uringTest, withPassthrough } from "../helpers.ts";

const RENAME_NOREPLACE = 1;
const RENAME_EXCHANGE = 2;
const UTIME_NOW = (1 << 30) - 1;
const UTIME_OMIT = (1 << 30) - 2;
const FALLOC_FL_KEEP_SIZE = 1;
const FALLOC_FL_PUNCH_HOLE = 2;
const SEEK_DATA = 3;
const SEEK_HOLE = 4;
const XATTR_CREATE = 1;

/** The errno name a libc call failed with. */
function failsWith(fn: () => number | bigint, code: string): void {
  assert.throws(() => {
    const r = fn();
    if (typeof r === "bigint" ? r < 0n : r < 0) check(-1, "call");
  }, (e: unknown) => e instanceof SystemError && e.code === code);
}

function timespecs(a: [number, number], m: [number, number]): Uint8Array<ArrayBuffer> {
  const ts = new BigInt64Array([BigInt(a[0]), BigInt(a[1]), BigInt(m[0]), BigInt(m[1])]);
  return new Uint8Array(ts.buffer);
}

function pwrite(fd: number, data: Uint8Array<ArrayBuffer>, offset: number): number {
  return check(
    libc.pwrite64(fd, Deno.UnsafePointer.of(data), BigInt(data.length), BigInt(offset)),
    "pwrite",
  );
}

const text = (s: string) => new TextEncoder().encode(s);

transportTest(
  "passthrough: rename flags, utimes now/omit, setattr through a handle, O_EXCL and O_TRUNC",
  (transport) =>
    withPassthrough(transport, async (mnt, src) => {
      await Deno.writeTextFile(`${mnt}/a`, "A");
      await Deno.writeTextFile(`${mnt}/b`, "B");
      const at = (name: string) => cstr(`${mnt}/${name}`);
      failsWith(
        () => libc.renameat2(AT.FDCWD, at("a"), AT.FDCWD, at("b"), RENAME_NOREPLACE),
        "EEXIST",
      );
      assert.equal(await Deno.readTextFile(`${src}/a`), "A");
      check(libc.renameat2(AT.FDCWD, at("a"), AT.FDCWD, at("b"), RENAME_EXCHANGE), "renameat2");
      assert.equal(await Deno.readTextFile(`${src}/a`), "B");
      assert.equal(await Deno.readTextFile(`${src}/b`), "A");
      check(libc.renameat2(AT.FDCWD, at("a"), AT.FDCWD, at("c"), RENAME_NOREPLACE), "renameat2");
      assert.deepEqual((await sh(`ls ${src}`)).split("\n"), ["b", "c", ""]);

      // UTIME_NOW on atime, UTIME_OMIT on mtime, then the other way round.
      await Deno.utime(`${mnt}/b`, 1_000_000_000, 1_000_000_000);
      check(
        libc.utimensat(AT.FDCWD, at("b"), timespecs([0, UTIME_NOW], [0, UTIME_OMIT]), 0),
        "utimensat",
      );
      const st = await Deno.stat(`${src}/b`);
      assert.ok(Math.abs(st.atime!.getTime() - Date.now()) < 60_000, `${st.atime}`);
      assert.equal(st.mtime!.getTime(), 1_000_000_000_000);
      check(
        libc.utimensat(AT.FDCWD, at("b"), timespecs([0, UTIME_OMIT], [1234567890, 5e8]), 0),
        "utimensat",
      );
      assert.equal(await sh(`stat -c %y ${src}/b`), "2009-02-13 23:31:30.500000000 +0000\n");
      assert.ok(Math.abs((await Deno.stat(`${src}/b`)).atime!.getTime() - Date.now()) < 60_000);

      // Through an open handle: fchmod, ftruncate, futimens.
      await Deno.writeTextFile(`${mnt}/h`, "0123456789abcdef");
      const fd = open(`${mnt}/h`, O.RDWR);
      try {
        check(libc.fchmod(fd, 0o604), "fchmod");
        check(libc.ftruncate(fd, 10n), "ftruncate");
        check(libc.futimens(fd, timespecs([2_000_000_000, 0], [2_000_000_001, 7])), "futimens");
      } finally {
        close(fd);
      }
      assert.equal(await sh(`stat -c '%a %s %X %Y' ${src}/h`), "604 10 2000000000 2000000001\n");
      assert.equal(await Deno.readTextFile(`${mnt}/h`), "0123456789");

      // Birth time comes through FUSE_STATX (getattr has no field for it).
      const birth = await sh(`stat -c %W.%w ${src}/h`);
      assert.notEqual(birth.split(".")[0], "0");
      assert.equal(await sh(`stat -c %W.%w ${mnt}/h`), birth);

      // O_CREAT|O_EXCL creates once; O_TRUNC empties.
      close(open(`${mnt}/x`, O.CREAT | O.EXCL | O.WRONLY, 0o640));
      assert.equal(await sh(`stat -c %a ${src}/x`), "640\n");
      failsWith(() => libc.open(at("x"), O.CREAT | O.EXCL | O.WRONLY, 0o640), "EEXIST");
      close(open(`${mnt}/h`, O.WRONLY | O.TRUNC));
      assert.equal((await Deno.stat(`${src}/h`)).size, 0);
    }),
);

transportTest(
  "passthrough: mknod makes fifos, sockets, files and devices like the backing file system",
  (transport) =>
    withPassthrough(transport, async (mnt, src) => {
      const nodes: [string, number, bigint][] = [
        ["fifo", S.IFIFO | 0o600, 0n],
        ["sock", S.IFSOCK | 0o640, 0n],
        ["file", S.IFREG | 0o644, 0n],
        ["null", S.IFCHR | 0o666, (1n << 8n) | 3n], // makedev(1, 3)
        ["loop", S.IFBLK | 0o660, (7n << 8n) | 200n],
      ];
      for (const [name, mode, dev] of nodes) {
        check(libc.mknodat(AT.FDCWD, cstr(`${mnt}/${name}`), mode, dev), "mknodat");
      }
      const fmt = "%n %F %a %t %T %u %g";
      const list = (d: string) => sh(`cd ${d} && stat -c '${fmt}' fifo sock file null loop`);
      const seen = await list(mnt);
      assert.equal(seen, await list(src));
      // (Modes are the ones asked for less this process's umask, as anywhere.)
      assert.match(seen, /^null character special file \d+ 1 3 0 0$/m);
      assert.match(seen, /^loop block special file \d+ 7 c8 0 0$/m);
      assert.match(seen, /^sock socket /m);
      // The mount is nodev (as libfuse mounts): its device nodes cannot be opened,
      // while the one in the backing directory works.
      const opened = await run("sh", "-c", `echo gone > ${mnt}/null`);
      assert.match(opened.stderr, /Permission denied/);
      assert.equal(await sh(`echo gone > ${src}/null && cat ${src}/null | wc -c`), "0\n");
    }),
);

transportTest(
  "passthrough: extended attributes are set, read, listed and removed on the backing file",
  (transport) =>
    withPassthrough(transport, async (mnt, src) => {
      await Deno.writeTextFile(`${mnt}/f`, "x");
      const path = cstr(`${mnt}/f`);
      const value = text("some value\0with a NUL");
      check(
        libc.setxattr(path, cstr("user.one"), value, BigInt(value.length), 0),
        "setxattr",
      );
      check(libc.setxattr(path, cstr("user.two"), text("2"), 1n, 0), "setxattr");
      failsWith(() => libc.setxattr(path, cstr("user.two"), text("3"), 1n, XATTR_CREATE), "EEXIST");
      const get = (p: string, name: string) => {
        const buf = new Uint8Array(256);
        const n = check64(
          libc.getxattr(cstr(p), cstr(name), buf, BigInt(buf.length)),
          "getxattr",
        );
        return buf.slice(0, n);
      };
      const list = (p: string) => {
        const buf = new Uint8Array(256);
        const n = check64(libc.listxattr(cstr(p), buf, BigInt(buf.length)), "listxattr");
        return new TextDecoder().decode(buf.subarray(0, n)).split("\0").filter(Boolean).sort();
      };
      assert.deepEqual(get(`${src}/f`, "user.one"), value);
      assert.deepEqual(get(`${mnt}/f`, "user.one"), value);
      assert.deepEqual(list(`${mnt}/f`), ["user.one", "user.two"]);
      assert.deepEqual(list(`${src}/f`), ["user.one", "user.two"]);
      // Asking for the size only, and a buffer too small.
      assert.equal(libc.getxattr(path, cstr("user.one"), null, 0n), BigInt(value.length));
      failsWith(() => libc.getxattr(path, cstr("user.one"), new Uint8Array(4), 4n), "ERANGE");
      check(libc.removexattr(path, cstr("user.one")), "removexattr");
      assert.deepEqual(list(`${src}/f`), ["user.two"]);
      failsWith(() => libc.getxattr(path, cstr("user.one"), null, 0n), "ENODATA");
    }),
);

transportTest(
  "passthrough: fallocate, punched holes, SEEK_DATA/SEEK_HOLE and copy_file_range",
  (transport) =>
    withPassthrough(transport, async (mnt, src) => {
      const MiB = 1 << 20;
      const fd = open(`${mnt}/f`, O.RDWR | O.CREAT, 0o644);
      try {
        check(libc.fallocate(fd, 0, 0n, BigInt(2 * MiB)), "fallocate");
        assert.equal((await Deno.stat(`${src}/f`)).size, 2 * MiB);
        const data = new Uint8Array(2 * MiB).fill(0xab);
        assert.equal(pwrite(fd, data, 0), 2 * MiB);
        const blocksBefore = Number(await sh(`stat -c %b ${src}/f`));
        check(
          libc.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 256n * 1024n, BigInt(MiB)),
          "fallocate",
        );
        const blocksAfter = Number(await sh(`stat -c %b ${src}/f`));
        assert.equal(blocksBefore - blocksAfter, MiB / 512);
        assert.equal((await Deno.stat(`${src}/f`)).size, 2 * MiB);
        // Holes and data as the backing file reports them.
        const srcFd = open(`${src}/f`, O.RDONLY);
        try {
          for (const [off, whence] of [[0, SEEK_HOLE], [300_000, SEEK_DATA], [0, SEEK_DATA]]) {
            assert.equal(
              libc.lseek(fd, BigInt(off), whence),
              libc.lseek(srcFd, BigInt(off), whence),
              `lseek(${off}, ${whence})`,
            );
          }
          assert.equal(libc.lseek(fd, 0n, SEEK_HOLE), 256n * 1024n);
          assert.equal(libc.lseek(fd, 300_000n, SEEK_DATA), BigInt(MiB + 256 * 1024));
          failsWith(() => libc.lseek(fd, BigInt(3 * MiB), SEEK_DATA), "ENXIO");
        } finally {
          close(srcFd);
        }
        // copy_file_range within the mount.
        const out = open(`${mnt}/g`, O.RDWR | O.CREAT, 0o644);
        try {
          const offIn = new BigInt64Array([100n]);
          const offOut = new BigInt64Array([7n]);
          const n = check64(
            libc.copy_file_range(
              fd,
              new Uint8Array(offIn.buffer),
              out,
              new Uint8Array(offOut.buffer),
              BigInt(MiB),
              0,
            ),
            "copy_file_range",
          );
          assert.equal(n, MiB);
          assert.equal(offOut[0], BigInt(MiB + 7));
        } finally {
          close(out);
        }
      } finally {
        close(fd);
      }
      const f = await Deno.readFile(`${src}/f`);
      const g = await Deno.readFile(`${src}/g`);
      assert.equal(g.length, MiB + 7);
      assert.deepEqual(g.subarray(7), f.subarray(100, 100 + MiB));
      assert.ok(f.subarray(256 * 1024, MiB + 256 * 1024).every((b) => b === 0));
      assert.ok(f.subarray(MiB + 256 * 1024).every((b) => b === 0xab));
    }),
);

transportTest(
  "passthrough: concurrent writers to distinct files and readers of one file",
  (transport) =>
    withPassthrough(transport, async (mnt, src) => {
      const refs = await Deno.makeTempDir();
      try {
        await sh(`for i in 1 2 3 4 5 6 7 8; do head -c $((3000000 + i * 4099)) /dev/urandom \
          > ${refs}/r$i; done`);
        await sh(`head -c 16000000 /dev/urandom > ${src}/shared`);
        const want = (await sh(`sha256sum < ${src}/shared`)).split(" ")[0];
        const jobs: Promise<string>[] = [];
        for (let i = 1; i <= 8; i++) {
          jobs.push(sh(`dd if=${refs}/r${i} of=${mnt}/w${i} bs=64k status=none && echo ok`));
          jobs.push(sh(`sha256sum < ${mnt}/shared`));
        }
        const results = await Promise.all(jobs);
        for (let i = 0; i < 8; i++) {
          assert.equal(results[2 * i], "ok\n");
          assert.equal(results[2 * i + 1].split(" ")[0], want);
        }
        await sh(`for i in 1 2 3 4 5 6 7 8; do cmp ${refs}/r$i ${src}/w$i; cmp ${refs}/r$i \
          ${mnt}/w$i; done`);
      } finally {
        await Deno.remove(refs, { recursive: true });
      }
    }),
);

transportTest(
  "passthrough: FORGET releases the fds held for forgotten inodes",
  (transport) =>
    withPassthrough(transport, async (mnt, src, pid) => {
      const held = async () => (await Array.fromAsync(Deno.readDir(`/proc/${pid}/fd`))).length;
      await sh(`mkdir ${src}/d && cd ${src}/d && seq 1 500 | xargs touch`);
      const before = await held();
      await sh(`ls -l ${mnt}/d > /dev/null`); // a lookup (or readdirplus) of each
      const looked = await held();
      assert.ok(looked >= before + 500, `fds ${before} -> ${looked}`);
      // The kernel forgets unused inodes when its caches are dropped.
      await sh("sync; echo 2 > /proc/sys/vm/drop_caches");
      let after = looked;
      for (let i = 0; i < 100 && after > before + 10; i++) {
        await new Promise((r) => setTimeout(r, 50));
        after = await held();
      }
      assert.ok(after <= before + 10, `fds ${before} -> ${looked} -> ${after}`);
      // Files looked up again get fresh node ids that work.
      assert.equal(await sh(`ls ${mnt}/d | wc -l`), "500\n");
      assert.equal(await sh(`stat -c %s ${mnt}/d/250`), "0\n");
    }),
);

transportTest(
  "passthrough: flock and POSIX locks conflict between processes",
  (transport) =>
    withPassthrough(transport, async (mnt) => {
      await Deno.writeTextFile(`${mnt}/lock`, "");
      // flock(1) holds an exclusive lock while a second one tries without waiting.
      const holder = new Deno.Command("flock", {
        args: ["-x", `${mnt}/lock`, "sleep", "1.5"],
      }).spawn();
      await new Promise((r) => setTimeout(r, 300));
      assert.equal((await run("flock", "-n", "-x", `${mnt}/lock`, "true")).code, 1);
      assert.equal((await holder.status).code, 0);
      assert.equal((await run("flock", "-n", "-x", `${mnt}/lock`, "true")).code, 0);
      // A POSIX write lock held here makes another process's F_SETLK fail with EAGAIN.
      const fd = open(`${mnt}/lock`, O.RDWR);
      try {
        const lock = new Uint8Array(32);
        new DataView(lock.buffer).setInt16(0, 1, true); // F_WRLCK, whole file
        check(libc.fcntl(fd, 6, /* F_SETLK */ lock), "fcntl");
        const tryLock = (path: string) =>
          run(Deno.execPath(), "run", "--allow-ffi", "tests/fixtures/try_posix_lock.ts", path);
        assert.equal((await tryLock(`${mnt}/lock`)).stdout, "EAGAIN\n");
        close(fd);
        assert.equal((await tryLock(`${mnt}/lock`)).stdout, "locked\n");
      } catch (e) {
        close(fd);
        throw e;
      }
    }),
);

transportTest(
  "passthrough: with allow_other, what another user creates is theirs",
  (transport) =>
    withPassthrough(transport, async (mnt, src) => {
      await Deno.chmod(mnt, 0o755);
      await Deno.mkdir(`${mnt}/pub`, { mode: 0o777 });
      await Deno.chmod(`${mnt}/pub`, 0o1777);
      // Its mode said, not left to this process's umask (a passthrough served
      // from this process sets it to 0).
      await Deno.writeTextFile(`${mnt}/pub/roots`, "root's", { mode: 0o644 });
      await Deno.chmod(`${mnt}/pub/roots`, 0o644);
      const asNobody = (script: string) =>
        run("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c", script);
      const made = await asNobody(
        `cd ${mnt}/pub && echo mine > f && mkdir d && mkfifo p && ln -s f s && ln f h && ` +
          `echo data > d/inner`,
      );
      assert.equal(made.code, 0, made.stderr);
      assert.equal(
        await sh(`cd ${src}/pub && stat -c '%n %u:%g' d d/inner f h p s`),
        ["d", "d/inner", "f", "h", "p", "s"].map((n) => `${n} 65534:65534\n`).join(""),
      );
      assert.equal(await sh(`stat -c %u:%g ${src}/pub/roots`), "0:0\n");
      // The kernel checks permissions (default_permissions): root's file stays root's.
      const denied = await asNobody(`echo no > ${mnt}/pub/roots`);
      assert.notEqual(denied.code, 0);
      assert.match(denied.stderr, /Permission denied/);
      assert.equal(await Deno.readTextFile(`${src}/pub/roots`), "root's");
      // Sticky directory: nobody cannot remove root's file, but can remove their own.
      assert.notEqual((await asNobody(`rm -f ${mnt}/pub/roots`)).code, 0);
      assert.equal((await asNobody(`rm -r ${mnt}/pub/d ${mnt}/pub/h`)).code, 0);
      assert.deepEqual((await sh(`ls ${src}/pub`)).split("\n"), ["f", "p", "roots", "s", ""]);
    }, ["-o", "allow_other"]),
);

/**
 * What a user without CAP_FSETID does to setuid/setgid files: the same
 * steps through the mount and directly on the source's own file system
 * must leave the same modes (FUSE_HANDLE_KILLPRIV_V2: the server clears the
 * bits, since its own root writes would keep them).
 */
async function killprivMatchesSource(transport: "dev" | "io_uring", extra: string[] = []) {
  const ref = await Deno.makeTempDir({ prefix: "denofuse-ref-" });
  await Deno.chmod(ref, 0o755);
  try {
    await withPassthrough(transport, async (mnt, src) => {
      await Deno.chmod(mnt, 0o755);
      const steps = [
        ["append", (p: string) => `echo more >> ${p}`],
        [
          "direct",
          (p: string) =>
            `dd if=/dev/zero of=${p} bs=4k count=1 oflag=direct conv=notrunc status=none`,
        ],
        ["truncate", (p: string) => `truncate -s 3 ${p}`],
        ["otrunc", (p: string) => `: > ${p}`],
      ] as const;
      const modes = ["6777", "6767", "4755", "2775"];
      const setup = (dir: string) =>
        sh(
          steps.flatMap(([name]) =>
            modes.map((m) => `echo data > ${dir}/${name}${m} && chmod ${m} ${dir}/${name}${m}`)
          ).join(" && ") + ` && echo data > ${dir}/root && chmod 6777 ${dir}/root` +
            ` && echo data > ${dir}/chown && chmod 6755 ${dir}/chown` +
            // The writer's own group: setgid without group-execute stays.
            ` && echo data > ${dir}/ingroup && chgrp 65534 ${dir}/ingroup` +
            ` && chmod 6767 ${dir}/ingroup`,
        );
      await setup(mnt);
      await setup(ref);
      const asNobody = (script: string) =>
        run("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c", script);
      for (const dir of [mnt, ref]) {
        for (const [name, cmd] of steps) {
          for (const m of modes) {
            const path = `${dir}/${name}${m}`;
            const done = await asNobody(cmd(path));
            // 4755 and 2775 are not writable by others: refused in both places alike.
            if (!m.endsWith("7")) assert.notEqual(done.code, 0, `${path}: ${done.stderr}`);
            else assert.equal(done.code, 0, `${path}: ${done.stderr}`);
          }
        }
        assert.equal((await asNobody(`echo more >> ${dir}/ingroup`)).code, 0);
        await sh(`echo root >> ${dir}/root && chown 65534 ${dir}/chown`);
      }
      const names = [
        ...steps.flatMap(([n]) => modes.map((m) => `${n}${m}`)),
        "root",
        "chown",
        "ingroup",
      ];
      const listing = (dir: string) => sh(`cd ${dir} && stat -c '%n %a %s' ${names.join(" ")}`);
      const expected = await listing(ref);
      assert.equal(await listing(mnt), expected);
      assert.equal(await listing(src), expected);
      // The bits really went where the kernel asked (sanity of the reference).
      assert.match(expected, /^append6777 777 /m);
      assert.match(expected, /^ingroup 2767 /m);
      assert.match(expected, /^root 6777 /m);
      assert.match(expected, /^chown 755 /m);
    }, ["-o", "allow_other", ...extra]);
  } finally {
    await Deno.remove(ref, { recursive: true });
  }
}

transportTest(
  "passthrough: writes and truncation by another user clear setuid/setgid as on the source",
  (transport) => killprivMatchesSource(transport),
);

uringTest(
  "passthrough: setuid/setgid cleared as on the source with one io_uring thread",
  () => killprivMatchesSource("io_uring", ["-o", "threads=1"]),
);

transportTest(
  "passthrough: with kernel passthrough, setuid/setgid are cleared as on the source",
  // The kernel writes the backing file itself, and asks the server to clear
  // the bits (SETATTR with FATTR_KILL_SUIDGID) before a caller's write.
  (transport) => killprivMatchesSource(transport, ["-o", "passthrough"]),
);
