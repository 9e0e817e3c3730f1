// Kernel passthrough (FUSE_PASSTHROUGH): the passthrough's whole-file opens
// are handed to the kernel, which moves their data itself. Data through the
// mount equals the source on both transports and thread placements, and the
// server's counters show that no file data reached it; an inode's opens
// share one backing id, and the last release drops it.
import assert from "node:assert/strict";
import { Passthrough } from "../../examples/passthrough.ts";
import { mount, type Session } from "../../mod.ts";
import { PASSTHROUGH_QUEUE_SOURCE } from "../../gen/passthrough_queue_source.ts";
import {
  run,
  serveLogged,
  serverData,
  sh,
  tempMountpoint,
  transportTest,
  waitFor,
} from "../helpers.ts";

/** Data in both directions: buffered, O_DIRECT, copied, appended, overwritten in place. */
async function moveData(mnt: string, src: string, scratch: string): Promise<void> {
  await sh(`head -c 5000017 /dev/urandom > ${src}/big`);
  assert.equal((await run("cmp", `${src}/big`, `${mnt}/big`)).code, 0);
  await sh(`dd if=${mnt}/big of=${scratch}/direct bs=1M iflag=direct status=none`);
  assert.equal((await run("cmp", `${src}/big`, `${scratch}/direct`)).code, 0);
  await sh(
    `cp ${src}/big ${mnt}/copy && dd if=/dev/urandom of=${mnt}/dwrite bs=1M count=3 oflag=direct status=none`,
  );
  assert.equal((await run("cmp", `${src}/big`, `${src}/copy`)).code, 0);
  assert.equal((await run("cmp", `${mnt}/dwrite`, `${src}/dwrite`)).code, 0);
  await sh(
    `echo tail >> ${mnt}/copy && dd if=/dev/zero of=${mnt}/copy bs=4k seek=7 count=1 conv=notrunc status=none`,
  );
  assert.equal((await run("cmp", `${mnt}/copy`, `${src}/copy`)).code, 0);
  // Read back whole, through the page cache.
  assert.equal(await sh(`sha256sum < ${mnt}/copy`), await sh(`sha256sum < ${src}/copy`));
}

for (const threads of [1, undefined]) {
  transportTest(
    `kernel passthrough: data moves without reaching the server (${
      threads ? "one thread" : "a thread per CPU"
    })`,
    async (transport) => {
      const [mnt, cleanup] = await tempMountpoint();
      const src = await Deno.makeTempDir({ prefix: "denofuse-src-" });
      const scratch = await Deno.makeTempDir({ prefix: "denofuse-scratch-" });
      const options = [transport === "io_uring" ? "io_uring" : "no_io_uring", "passthrough"];
      if (threads) options.push(`threads=${threads}`);
      try {
        const { log, counters } = await serveLogged(
          ["examples/passthrough.ts", src, mnt, "-o", options.join(",")],
          () => moveData(mnt, src, scratch),
        );
        assert.match(log, /INIT: agreed .*PASSTHROUGH/);
        // Not one READ or WRITE of file data reached the server.
        assert.deepEqual(serverData(counters), { reads: 0, writes: 0 });
        assert.doesNotMatch(log, /opcode: (READ|WRITE) /);
      } finally {
        await cleanup();
        await Deno.remove(src, { recursive: true });
        await Deno.remove(scratch, { recursive: true });
      }
    },
  );
}

/**
 * Mount the passthrough of a fresh source holding `files` (name → content,
 * mode) in this process with kernel passthrough, so that the session's
 * backing-file count can be read; after `fn`, none may be left.
 */
async function withBackingSession(
  transport: "dev" | "io_uring",
  files: Record<string, [string, number]>,
  fn: (mnt: string, src: string, session: Session) => Promise<void>,
): Promise<void> {
  const [mnt, cleanup] = await tempMountpoint();
  const src = await Deno.makeTempDir({ prefix: "denofuse-src-" });
  for (const [name, [content, mode]] of Object.entries(files)) {
    await Deno.writeTextFile(`${src}/${name}`, content);
    await Deno.chmod(`${src}/${name}`, mode);
  }
  const fs = new Passthrough(src);
  const session = await mount(fs, mnt, {
    transport,
    handleSignals: false,
    passthrough: true,
    defaultPermissions: true,
    perQueue: { source: PASSTHROUGH_QUEUE_SOURCE, data: fs.shared },
  });
  try {
    await fn(mnt, src, session);
  } finally {
    await session.unmount();
    assert.equal(session.backingFiles, 0);
    await cleanup();
    await Deno.remove(src, { recursive: true });
  }
}

transportTest(
  "kernel passthrough: an inode's opens share one backing id; the last release drops it",
  (transport) =>
    withBackingSession(transport, {
      f: ["content\n", 0o644],
      g: ["other\n", 0o644],
    }, async (mnt, src, session) => {
      assert.equal(session.backingFiles, 0);
      // A shell holds f open twice (reading and writing) and g once.
      const holder = new Deno.Command("sh", {
        args: ["-c", `exec 3<"$0"/f 4>>"$0"/f 5<"$0"/g; echo open; read _; echo more >&4`, mnt],
        stdin: "piped",
        stdout: "piped",
      }).spawn();
      const reader = holder.stdout.pipeThrough(new TextDecoderStream()).getReader();
      assert.equal((await reader.read()).value, "open\n");
      assert.equal(session.backingFiles, 2); // one per inode, not per open
      const w = holder.stdin.getWriter();
      await w.write(new TextEncoder().encode("\n"));
      await w.close();
      await reader.cancel();
      assert.equal((await holder.status).code, 0);
      assert.equal(await Deno.readTextFile(`${src}/f`), "content\nmore\n");
      // RELEASE comes after close, asynchronously.
      await waitFor(() => Promise.resolve(session.backingFiles === 0));
      assert.equal(await sh(`cat ${mnt}/f ${mnt}/g`), "content\nmore\nother\n");
      await waitFor(() => Promise.resolve(session.backingFiles === 0));
    }),
);

transportTest(
  "kernel passthrough: opens of one inode stay in one mode while another is open (setuid added or removed meanwhile)",
  (transport) =>
    withBackingSession(transport, {
      s: ["setuid\n", 0o4755],
      p: ["plain\n", 0o644],
    }, async (mnt, src, session) => {
      // A setuid file is served; made plain while open, its next open is
      // served too (a passed-through one would fail: the kernel's ETXTBSY).
      const served = await Deno.open(`${mnt}/s`, { read: true });
      try {
        await Deno.chmod(`${mnt}/s`, 0o755);
        assert.equal(await Deno.readTextFile(`${mnt}/s`), "setuid\n");
        assert.equal(session.backingFiles, 0);
      } finally {
        served.close();
      }
      // Closed: the next open of the now plain file is passed through.
      await waitFor(async () => {
        const f = await Deno.open(`${mnt}/s`, { read: true });
        const passed = session.backingFiles === 1;
        f.close();
        return passed;
      });
      // A plain file open in passthrough, made setuid meanwhile: its next
      // open shares the backing file (one served would fail with EIO).
      const passed = await Deno.open(`${mnt}/p`, { read: true, write: true });
      try {
        await waitFor(() => Promise.resolve(session.backingFiles === 1));
        await Deno.chmod(`${mnt}/p`, 0o4755);
        assert.equal(await Deno.readTextFile(`${mnt}/p`), "plain\n");
        await passed.write(new TextEncoder().encode("PLAIN"));
      } finally {
        passed.close();
      }
      assert.equal(await Deno.readTextFile(`${src}/p`), "PLAIN\n");
      await waitFor(() => Promise.resolve(session.backingFiles === 0));
    }),
);
