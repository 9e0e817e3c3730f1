// What the guest suites share (guest/seed: the seeds' buffer-ring modes in
// the seed kernel's guest; guest/pools: Linux 7.3's buffer-pool modes in
// the mainline kernel's guest): a server started as a user starts it, the
// data it must carry through the mount, and the counters it ends with.
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { mount } from "../mod.ts";
import type { SessionCounters } from "../server/session.ts";
import type { UringMode } from "../server/uring/modes/mode.ts";
import {
  isMounted,
  reap,
  run,
  sh,
  startServer,
  tempMountpoint,
  waitFor,
  withTimeout,
} from "../tests/helpers.ts";
import { counted } from "../tests/fixtures/counted_fs.ts";

/**
 * The test registrar of a guest suite: its tests fail, never skip, where
 * `missing` (why this kernel lacks what they test) is not null.
 */
export function guestTests(
  missing: string | null,
  where: string,
): (name: string, fn: () => Promise<void>, timeoutMs?: number) => void {
  return (name, fn, timeoutMs = 240_000) =>
    Deno.test({
      name,
      sanitizeResources: false,
      sanitizeOps: false,
      async fn() {
        assert.equal(missing, null, `run these in ${where}: ${missing}`);
        await withTimeout(fn, timeoutMs);
      },
    });
}

/**
 * Start a server as a user would (`deno run --allow-ffi ARGS -d`), check it
 * serves over io_uring in `mode`, run `fn`, stop it with SIGTERM, and return
 * the counters its debug log ends with.
 */
export async function serve(
  args: string[],
  mode: string,
  mnt: string,
  fn: () => Promise<void>,
): Promise<SessionCounters> {
  const { child, out } = await startServer([...args, "-d"]);
  // Drain the debug log as it comes, so the server never blocks on the pipe.
  const log = new Response(child.stderr).text();
  try {
    assert.match(out, new RegExp(`over io_uring \\(${mode}\\)`));
    await fn();
    child.kill("SIGTERM");
    assert.equal((await child.status).code, 0);
    assert.equal(isMounted(mnt), false);
    const text = await log;
    const line = text.split("\n").find((l) => l.startsWith("counters: "));
    assert.ok(line, `no counters in the log:\n${text.slice(-2000)}`);
    return JSON.parse(line.slice("counters: ".length));
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
    await reap(child);
    await log.catch(() => "");
  }
}

/**
 * {@linkcode serve} the passthrough of a fresh source in `mode` on
 * `threads` threads (`more`: further `-o` options).
 */
export async function withMode(
  mode: string,
  threads: number,
  fn: (mnt: string, src: string) => Promise<void>,
  more = "",
): Promise<SessionCounters> {
  const [mnt, cleanup] = await tempMountpoint();
  const src = await Deno.makeTempDir({ prefix: "denofuse-src-" });
  try {
    // The modes carry file data only when the server moves it: no kernel passthrough.
    const options = `io_uring,io_uring_mode=${mode},threads=${threads},nopassthrough${more}`;
    return await serve(
      ["examples/passthrough.ts", src, mnt, "-o", options],
      mode,
      mnt,
      () => fn(mnt, src),
    );
  } finally {
    await cleanup();
    await Deno.remove(src, { recursive: true });
  }
}

/** A small seeded generator (mulberry32), so a failure can be replayed. */
export function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), seed | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export async function cmp(a: string, b: string): Promise<void> {
  const r = await run("cmp", a, b);
  assert.equal(r.code, 0, `${a} and ${b} differ: ${r.stdout}${r.stderr}`);
}

/** Everything the tests do through a mount, checked against the source. */
export async function exercise(mnt: string, src: string): Promise<void> {
  // Reads: buffered (cat), and O_DIRECT in 1 MiB blocks.
  await sh(`head -c 3000017 /dev/urandom > ${src}/big`);
  await cmp(`${src}/big`, `${mnt}/big`);
  await sh(`dd if=${mnt}/big of=/tmp/direct-read bs=1M iflag=direct status=none`);
  await cmp(`${src}/big`, "/tmp/direct-read");
  // Writes: buffered (cp), and O_DIRECT.
  await sh(`cp ${src}/big ${mnt}/copy`);
  await cmp(`${src}/big`, `${src}/copy`);
  await sh(`dd if=${src}/big of=${mnt}/direct bs=1M oflag=direct status=none`);
  await cmp(`${src}/big`, `${src}/direct`);
  // Directories, symlinks, names, small files (payloads in kernel buffers).
  await Deno.mkdir(`${mnt}/dir`);
  for (let i = 0; i < 300; i++) await Deno.writeTextFile(`${mnt}/dir/file-${i}`, `${i}\n`);
  const listed = (await sh(`ls ${mnt}/dir`)).trim().split("\n").sort();
  const expected = Array.from({ length: 300 }, (_, i) => `file-${i}`).sort();
  assert.deepEqual(listed, expected);
  assert.equal(await Deno.readTextFile(`${src}/dir/file-299`), "299\n");
  await Deno.symlink("dir/file-7", `${mnt}/link`);
  assert.equal(await Deno.readLink(`${mnt}/link`), "dir/file-7");
  assert.equal(await Deno.readTextFile(`${mnt}/link`), "7\n");
  const st = await Deno.stat(`${mnt}/big`);
  assert.equal(st.size, 3000017);
  // Many clients at once, so that requests queue up in the kernel: an
  // entry then gets its next request at commit, in the buffer it holds.
  const expectedSum = await sh(`cd ${src}/dir && cat $(ls | sort) | md5sum`);
  const sums = await sh(
    `for i in 1 2 3 4 5 6 7 8; do (cd ${mnt}/dir && ls | sort | xargs cat | md5sum) & done; wait`,
  );
  assert.deepEqual(sums.trim().split("\n"), Array(8).fill(expectedSum.trim()));

  // Randomized pwrite / pread / truncate against a reference file on tmpfs.
  const next = random(0x5eed);
  const ref = await Deno.open("/tmp/reference", {
    read: true,
    write: true,
    create: true,
    truncate: true,
  });
  const file = await Deno.open(`${mnt}/random`, { read: true, write: true, create: true });
  try {
    for (let op = 0; op < 300; op++) {
      const pick = next();
      const offset = Math.floor(next() * 2_000_000);
      if (pick < 0.5) {
        const data = new Uint8Array(1 + Math.floor(next() * 300_000));
        for (let i = 0; i < data.length; i += 997) data[i] = Math.floor(next() * 256);
        for (const f of [ref, file]) {
          await f.seek(offset, Deno.SeekMode.Start);
          let done = 0;
          while (done < data.length) done += await f.write(data.subarray(done));
        }
      } else if (pick < 0.85) {
        const length = 1 + Math.floor(next() * 400_000);
        const [a, b] = [new Uint8Array(length), new Uint8Array(length)];
        const got = [];
        for (const [f, buf] of [[ref, a], [file, b]] as const) {
          await f.seek(offset, Deno.SeekMode.Start);
          let done = 0;
          for (;;) {
            const n = await f.read(buf.subarray(done));
            if (n === null || n === 0) break;
            done += n;
            if (done === length) break;
          }
          got.push(done);
        }
        assert.equal(got[1], got[0], `read of ${length} at ${offset}: length`);
        assert.ok(
          Buffer.from(a.subarray(0, got[0])).equals(b.subarray(0, got[1])),
          `read at ${offset}`,
        );
      } else {
        await ref.truncate(offset);
        await file.truncate(offset);
      }
    }
  } finally {
    ref.close();
    file.close();
  }
  await cmp("/tmp/reference", `${mnt}/random`);
  await cmp("/tmp/reference", `${src}/random`);
}

/**
 * Serve hello (a FileSystem that makes its data) in `mode` on 1 and 2
 * threads, read it with ls, cat and O_DIRECT dd, and hand each run's
 * counters to `check`. With 2 threads hello lives on the session's thread,
 * so requests were handed over.
 */
export async function serveHello(
  mode: UringMode,
  check: (c: SessionCounters, threads: number) => void,
): Promise<void> {
  for (const threads of [1, 2]) {
    const [mnt, cleanup] = await tempMountpoint();
    const options = `io_uring,io_uring_mode=${mode},threads=${threads}`;
    try {
      const c = await serve(["examples/hello.ts", mnt, "-o", options], mode, mnt, async () => {
        assert.equal((await sh(`ls ${mnt}`)).trim(), "hello");
        assert.equal(await sh(`cat ${mnt}/hello`), "Hello, World!\n");
        assert.equal(
          await sh(`dd if=${mnt}/hello bs=4096 iflag=direct status=none`),
          "Hello, World!\n",
        );
      });
      const forwarded = c.queues!.reduce((n, q) => n + q.forwarded, 0);
      if (threads === 1) assert.equal(forwarded, 0);
      else assert.ok(forwarded >= 3, JSON.stringify(c.queues));
      check(c, threads);
    } finally {
      await cleanup();
    }
  }
}

/**
 * kill -9 of a passthrough server started with `-o option` while a client
 * reads: no client hangs, the mountpoint says "not connected", and it
 * mounts again.
 */
export async function killMidRead(option: string): Promise<void> {
  const [mnt, cleanup] = await tempMountpoint();
  const src = await Deno.makeTempDir({ prefix: "denofuse-src-" });
  await Deno.writeTextFile(`${src}/f`, "still here\n");
  const start = () =>
    startServer(["examples/passthrough.ts", src, mnt, "-o", `${option},nopassthrough`]);
  let { child } = await start();
  try {
    assert.equal(await sh(`cat ${mnt}/f`), "still here\n");
    // A client in the middle of reading when the server dies.
    const reader = new Deno.Command("sh", {
      args: ["-c", `while cat ${mnt}/f > /dev/null; do :; done`],
    }).spawn();
    await new Promise((r) => setTimeout(r, 300));
    child.kill("SIGKILL");
    await reap(child);
    // The connection dies with the server: the client's loop ends on an error, not a hang.
    const ended = await Promise.race([
      reader.status.then(() => true),
      new Promise<boolean>((r) => setTimeout(() => r(false), 20_000)),
    ]);
    if (!ended) reader.kill("SIGKILL");
    assert.ok(ended, "a client hung after the server was killed");
    const stat = await run("timeout", "10", "stat", mnt);
    assert.notEqual(stat.code, 124, "stat hung");
    assert.match(stat.stderr, /not connected/);
    await run("umount", "-l", mnt);
    await waitFor(() => Promise.resolve(!isMounted(mnt)));
    ({ child } = await start());
    assert.equal(await sh(`cat ${mnt}/f`), "still here\n");
    child.kill("SIGTERM");
    assert.equal((await child.status).code, 0);
    assert.equal(isMounted(mnt), false);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await reap(child);
    await cleanup();
    await Deno.remove(src, { recursive: true });
  }
}

/**
 * Notify store and retrieve on a session of `threads` threads in `mode`:
 * the kernel's NOTIFY_REPLY comes back through a queue's ring.
 */
export async function notifyRetrieve(mode: UringMode, threads: number): Promise<void> {
  const [mnt, cleanup] = await tempMountpoint();
  const { fs } = counted(new TextEncoder().encode("from the server\n"));
  const session = await mount(fs, mnt, {
    transport: "io_uring",
    uringMode: mode,
    threads,
    handleSignals: false,
    entryTimeout: 3600,
    attrTimeout: 3600,
  });
  try {
    assert.equal(session.uringMode, mode);
    assert.equal((await run("cat", `${mnt}/f`)).stdout, "from the server\n");
    const stored = new TextEncoder().encode("stored by notif\n");
    assert.equal(session.notify.store(2, 0, stored), true);
    // The kernel's NOTIFY_REPLY comes through a queue's ring in this mode.
    assert.equal(
      new TextDecoder().decode(await session.notify.retrieve(2, 0, 4096)),
      "stored by notif\n",
    );
    assert.ok((session.counters.uring?.requests ?? 0) > 0);
  } finally {
    await session.unmount();
    await cleanup();
  }
}
