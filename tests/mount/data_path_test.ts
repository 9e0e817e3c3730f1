// End-to-end data path on each transport: reads answered with an FdSource
// and writes answered with an FdSink, driven by dd, cat and Deno's fs API,
// compared byte for byte with the backing files. On io_uring the counters
// prove the data went through the entries' fixed-buffer slots (READ_FIXED /
// WRITE_FIXED with ring backing calls, pread / pwrite into the slot with
// direct ones). Every test runs with both kinds of backing calls.
import assert from "node:assert/strict";
import { cstr, libc, O } from "../../ffi/libc.ts";
import { mount, type Session } from "../../mod.ts";
import { backedFs } from "../fixtures/backed_fs.ts";
import { run, tempMountpoint, transportTest } from "../helpers.ts";

function openBacking(path: string, flags: number): number {
  const fd = libc.open(cstr(path), flags | O.CREAT | O.CLOEXEC, 0o644);
  if (fd < 0) throw new Error(`open ${path}`);
  return fd;
}

function random(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
}

async function sha(path: string): Promise<string> {
  return (await run("sha256sum", path)).stdout.split(" ")[0];
}

/** fd reads / fixed reads, fd writes / fixed writes, on the session's transport. */
function dataCounts(s: Session): { reads: number; writes: number } {
  const c = s.counters;
  return s.transport === "io_uring"
    ? { reads: c.uring!.fixedReads, writes: c.uring!.fixedWrites }
    : { reads: c.dev.fdReads, writes: c.dev.fdWrites };
}

async function withBackedMount(
  transport: "dev" | "io_uring",
  backingIo: "ring" | "direct",
  fn: (mnt: string, back: string, session: Session) => Promise<void>,
): Promise<void> {
  const [mnt, cleanup] = await tempMountpoint();
  const back = await Deno.makeTempDir({ prefix: "denofuse-back-" });
  const fds = {
    data: openBacking(`${back}/data`, O.RDWR),
    small: openBacking(`${back}/small`, O.RDWR),
    writeonly: openBacking(`${back}/writeonly`, O.WRONLY),
  };
  await Deno.writeFile(`${back}/small`, random(1000));
  await Deno.writeTextFile(`${back}/writeonly`, "cannot be read through its fd");
  try {
    const session = await mount(backedFs(fds), mnt, {
      handleSignals: false,
      transport,
      backingIo,
    });
    try {
      assert.equal(session.transport, transport);
      await fn(mnt, back, session);
    } finally {
      await session.unmount();
    }
  } finally {
    for (const fd of Object.values(fds)) libc.close(fd);
    await cleanup();
    await Deno.remove(back, { recursive: true });
  }
}

for (const backingIo of ["ring", "direct"] as const) {
  transportTest(
    `data: 8 MiB written and read back with dd (direct and buffered) [${backingIo}]`,
    (transport) =>
      withBackedMount(transport, backingIo, async (mnt, back, session) => {
        const src = `${back}/source.bin`;
        await Deno.writeFile(src, random(8 << 20));
        const w = await run(
          "dd",
          `if=${src}`,
          `of=${mnt}/data`,
          "bs=1M",
          "oflag=direct",
          "status=none",
        );
        assert.equal(w.code, 0, w.stderr);
        assert.equal(await sha(`${back}/data`), await sha(src));
        const afterWrite = dataCounts(session);
        assert.ok(afterWrite.writes >= 8, JSON.stringify(session.counters));

        const r = await run(
          "sh",
          "-c",
          `dd if=${mnt}/data bs=1M iflag=direct status=none | sha256sum`,
        );
        assert.equal(r.stdout.split(" ")[0], await sha(src));
        assert.ok(dataCounts(session).reads >= 8, JSON.stringify(session.counters));
        // Buffered, through the page cache and readahead, with Deno's fs API.
        assert.deepEqual(await Deno.readFile(`${mnt}/data`), await Deno.readFile(src));
        // A 4 MiB read is split by the kernel into requests that fit the slots.
        const big = await run(
          "sh",
          "-c",
          `dd if=${mnt}/data bs=4M iflag=direct status=none | sha256sum`,
        );
        assert.equal(big.stdout.split(" ")[0], await sha(src));
      }),
  );

  transportTest(
    `data: short reads at EOF and unaligned offsets [${backingIo}]`,
    (transport) =>
      withBackedMount(transport, backingIo, async (mnt, back) => {
        const small = await Deno.readFile(`${back}/small`);
        // Direct read of a whole block: the reply carries only the 1000 bytes there are.
        const r = await run(
          "sh",
          "-c",
          `dd if=${mnt}/small bs=4096 count=1 iflag=direct status=none | wc -c`,
        );
        assert.equal(r.stdout.trim(), "1000");
        assert.deepEqual(await Deno.readFile(`${mnt}/small`), small);
        assert.equal((await run("stat", "-c", "%s", `${mnt}/small`)).stdout.trim(), "1000");
        // Unaligned: 333 bytes at offset 517.
        const f = await Deno.open(`${mnt}/small`);
        try {
          await f.seek(517, Deno.SeekMode.Start);
          const buf = new Uint8Array(333);
          let got = 0;
          while (got < buf.length) {
            const n = await f.read(buf.subarray(got));
            if (n === null) break;
            got += n;
          }
          assert.equal(got, 333);
          assert.deepEqual(buf, small.subarray(517, 850));
        } finally {
          f.close();
        }
        // Appending with an unaligned write lands at the right place.
        const tail = new TextEncoder().encode("appended tail");
        await Deno.writeFile(`${mnt}/small`, tail, { append: true });
        const now = await Deno.readFile(`${back}/small`);
        assert.equal(now.length, 1000 + tail.length);
        assert.deepEqual(now.subarray(1000), tail);
        // Reading past EOF gives nothing.
        const past = await run("sh", "-c", `dd if=${mnt}/small bs=1 skip=5000 status=none | wc -c`);
        assert.equal(past.stdout.trim(), "0");
      }),
  );

  transportTest(
    `data: a failing backing read reaches the caller as its errno [${backingIo}]`,
    (transport) =>
      withBackedMount(transport, backingIo, async (mnt) => {
        // The backing fd is write-only: the backing read fails with EBADF.
        const r = await run("dd", `if=${mnt}/writeonly`, "of=/dev/null", "bs=4096", "iflag=direct");
        assert.notEqual(r.code, 0);
        assert.match(r.stderr, /Bad file descriptor/);
        // And the server goes on serving.
        const ok = await run("sh", "-c", `cat ${mnt}/small | wc -c`);
        assert.equal(ok.stdout.trim(), "1000");
      }),
  );
}
