// The passthrough's choice of backing calls: direct system calls on a
// memory file system (tmpfs), io_uring operations elsewhere, and what
// `-o backing_io=` asks for. The -d log says which was used; a workload
// through the mount is then compared with the source.
import assert from "node:assert/strict";
import { isMounted, run, sh, startServer, tempMountpoint, transportTest } from "../helpers.ts";

/**
 * Serve `src` with `-d` and the given options, run `fn`, stop the server,
 * and resolve with its log.
 */
async function serveLogged(
  transport: "dev" | "io_uring",
  src: string,
  options: string[],
  fn: (mnt: string) => Promise<void>,
): Promise<string> {
  const [mnt, cleanup] = await tempMountpoint();
  const { child } = await startServer([
    "examples/passthrough.ts",
    src,
    mnt,
    "-d",
    "-o",
    [transport === "io_uring" ? "io_uring" : "no_io_uring", ...options].join(","),
  ]);
  // -d logs every request: drain it as it comes, or the server would block.
  const log = new Response(child.stderr).text();
  try {
    await fn(mnt);
    child.kill("SIGTERM");
    assert.equal((await child.status).code, 0);
    assert.equal(isMounted(mnt), false);
    return await log;
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
    await child.status;
    await child.stdout.cancel().catch(() => {});
    await cleanup();
  }
}

/** A tmpfs of its own, mounted for `fn` and always unmounted. */
async function withTmpfs(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "denofuse-tmpfs-" });
  await sh(`mount -t tmpfs -o size=64m denofuse-test ${dir}`);
  try {
    await fn(dir);
  } finally {
    await run("umount", dir);
    await Deno.remove(dir);
  }
}

/** Files, links, renames and data written through the mount, checked against the source. */
async function workload(mnt: string, src: string): Promise<void> {
  await sh(`
    set -e
    cd ${mnt}
    mkdir -p a/b
    head -c 3000017 /dev/urandom > a/big
    dd if=a/big of=a/direct bs=1M oflag=direct status=none
    printf 'hello' > a/b/small
    dd if=/dev/zero of=a/b/small bs=1 seek=2 count=2 conv=notrunc status=none
    ln -s ../big a/b/link
    ln a/big a/hard
    mv a/b/small a/moved
    rm a/hard
    touch a/gone && rm a/gone
  `);
  assert.equal(await sh(`cmp ${mnt}/a/big ${src}/a/big && echo same`), "same\n");
  // O_DIRECT read through the mount equals the source's bytes.
  assert.equal(
    await sh(`dd if=${mnt}/a/direct bs=64k iflag=direct status=none | sha256sum`),
    await sh(`sha256sum < ${src}/a/big`),
  );
  assert.deepEqual(await Deno.readFile(`${src}/a/moved`), new Uint8Array([104, 101, 0, 0, 111]));
  assert.equal(await Deno.readLink(`${src}/a/b/link`), "../big");
  assert.equal(await sh(`stat -c %h ${src}/a/big`), "1\n");
  const listing = (dir: string) =>
    sh(`cd ${dir} && find . | sort && find . -type f | xargs stat -c '%n %s %a'`);
  assert.equal(await listing(mnt), await listing(src));
  const fio = await run(
    "fio",
    "--name=verify",
    `--directory=${mnt}`,
    "--rw=randwrite",
    "--bs=4k",
    "--size=4M",
    "--direct=1",
    "--verify=crc32c",
    "--do_verify=1",
    "--verify_state_save=0",
  );
  assert.equal(fio.code, 0, fio.stdout + fio.stderr);
}

transportTest(
  "backing calls: direct on a tmpfs source, and the mount works",
  (transport) =>
    withTmpfs(async (src) => {
      let mnt = "";
      const log = await serveLogged(transport, src, [], async (m) => {
        mnt = m;
        await workload(m, src);
      });
      assert.ok(mnt);
      assert.match(log, /^backing calls: direct$/m);
    }),
);

transportTest(
  "backing calls: -o backing_io=ring on a tmpfs source uses the ring",
  (transport) =>
    withTmpfs(async (src) => {
      const log = await serveLogged(transport, src, ["backing_io=ring"], (m) => workload(m, src));
      assert.match(log, /^backing calls: ring$/m);
    }),
);

transportTest("backing calls: auto follows the source's file system type", async (transport) => {
  const src = await Deno.makeTempDir({ prefix: "denofuse-src-" });
  try {
    const type = (await sh(`stat -f -c %T ${src}`)).trim();
    const log = await serveLogged(transport, src, ["backing_io=auto"], async (m) => {
      await Deno.writeTextFile(`${m}/f`, "data");
    });
    assert.equal(await Deno.readTextFile(`${src}/f`), "data");
    const expected = type === "tmpfs" || type === "ramfs" ? "direct" : "ring";
    assert.match(log, new RegExp(`^backing calls: ${expected}$`, "m"), `source on ${type}`);
  } finally {
    await Deno.remove(src, { recursive: true });
  }
});

Deno.test("backing calls: an unknown -o backing_io value is a usage error", async () => {
  const dir = await Deno.makeTempDir({ prefix: "denofuse-src-" });
  try {
    await Deno.mkdir(`${dir}/mnt`);
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-ffi",
        "examples/passthrough.ts",
        `${dir}/src`,
        `${dir}/mnt`,
        "-o",
        "backing_io=fast",
      ],
      cwd: new URL("../..", import.meta.url).pathname,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 2);
    assert.match(new TextDecoder().decode(out.stderr), /backing_io takes ring, direct or auto/);
    assert.equal(isMounted(`${dir}/mnt`), false);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
