// The file helpers (fs/files.ts, exported by mod.ts): a file system's own
// files through libc, compared with what Deno's file API says of them.
import assert from "node:assert/strict";
import {
  closeFile,
  Errno,
  fstatFile,
  O,
  openFile,
  preadFile,
  pwriteFile,
  readLink,
  S,
  statFile,
  SystemError,
} from "../../mod.ts";

Deno.test("files: open, pread, pwrite, fstat, stat, readlink and close as libc does them", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/f`;
    const fd = openFile(path, O.RDWR | O.CREAT, 0o640);
    assert.equal(pwriteFile(fd, new TextEncoder().encode("hello, files"), 0), 12);
    assert.equal(pwriteFile(fd, new TextEncoder().encode("world").subarray(1, 3), 20), 2);
    assert.equal(new TextDecoder().decode(preadFile(fd, 5, 7)), "files");
    assert.equal(preadFile(fd, 100, 20).length, 2); // short at the end
    assert.equal(preadFile(fd, 100, 50).length, 0); // none past it
    const attr = fstatFile(fd);
    const deno = await Deno.stat(path);
    assert.equal(attr.size, 22);
    assert.equal(attr.ino, deno.ino);
    assert.equal(attr.mode, deno.mode);
    assert.equal(attr.mode! & S.IFMT, S.IFREG);
    assert.equal(attr.mtimeSec, Math.floor(deno.mtime!.getTime() / 1000));
    closeFile(fd);
    assert.throws(() => closeFile(fd), (e) => e instanceof SystemError && e.errno === Errno.EBADF);
    await Deno.symlink("f", `${dir}/l`);
    assert.equal(readLink(`${dir}/l`), "f");
    assert.equal(statFile(`${dir}/l`).mode & S.IFMT, S.IFLNK); // the link itself
    assert.equal(statFile(dir).mode & S.IFMT, S.IFDIR);
    assert.throws(
      () => openFile(`${dir}/missing`),
      (e) => e instanceof SystemError && e.errno === Errno.ENOENT && /missing/.test(e.message),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
