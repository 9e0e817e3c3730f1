// End-to-end: the hello file system on a real mount, on each transport,
// checked with Deno's fs API and with ordinary tools; its lifecycle, and the
// errors a user meets.
import assert from "node:assert/strict";
import { hello } from "../../examples/hello.ts";
import { mount, MountError, type Session } from "../../mod.ts";
import {
  isMounted,
  killServer,
  mountTest,
  reap,
  run,
  startServer,
  tempMountpoint,
  transportTest,
  waitFor,
} from "../helpers.ts";

const repo = new URL("../..", import.meta.url).pathname;
const deno = Deno.execPath();

/** Requests served over `transport` so far. */
/** Requests read by the transport's threads (the session's, and any /dev/fuse threads). */
function served(session: Session, transport: string): number {
  const c = session.counters;
  if (transport === "io_uring") return c.uring?.requests ?? 0;
  return c.dev.requests + (c.devThreads ?? []).reduce((n, t) => n + t.requests, 0);
}

transportTest("hello: Deno fs API and ls/stat/cat see one read-only file", async (transport) => {
  const [mnt, cleanup] = await tempMountpoint();
  try {
    const session = await mount(hello, mnt, {
      fsname: "hello",
      subtype: "hello",
      handleSignals: false,
      transport,
    });
    try {
      assert.equal(session.transport, transport);
      assert.ok(isMounted(mnt));
      assert.equal(await Deno.readTextFile(`${mnt}/hello`), "Hello, World!\n");
      const entries = [];
      for await (const e of Deno.readDir(mnt)) entries.push([e.name, e.isFile]);
      assert.deepEqual(entries, [["hello", true]]);
      const st = await Deno.stat(`${mnt}/hello`);
      assert.equal(st.size, 14);
      assert.equal(st.mode! & 0o777, 0o444);
      assert.ok(st.isFile);

      assert.equal((await run("cat", `${mnt}/hello`)).stdout, "Hello, World!\n");
      assert.equal(
        (await run("stat", "-c", "%s %a %F %h", `${mnt}/hello`)).stdout,
        "14 444 regular file 1\n",
      );
      const ls = await run("ls", "-l", mnt);
      assert.match(ls.stdout, /^-r--r--r-- 1 root root 14 .* hello$/m);
      const missing = await run("cat", `${mnt}/nope`);
      assert.notEqual(missing.code, 0);
      assert.match(missing.stderr, /No such file or directory/);

      // No mkdir method: the caller sees ENOSYS, and the server keeps going.
      const mk = await run("mkdir", `${mnt}/newdir`);
      assert.notEqual(mk.code, 0);
      assert.match(mk.stderr, /Function not implemented/);
      await assert.rejects(
        Deno.mkdir(`${mnt}/other`),
        (e: Error) => /ENOSYS|not implemented/i.test(String(e)),
      );
      // Writing to a read-only file is refused by the file system (EACCES).
      const w = await run("sh", "-c", `echo x > ${mnt}/hello`);
      assert.match(w.stderr, /Permission denied/);
      assert.equal(await Deno.readTextFile(`${mnt}/hello`), "Hello, World!\n");

      // The requests went where the transport says: INIT always over
      // /dev/fuse, everything after it over the rings on io_uring.
      assert.ok(served(session, transport) >= 10, JSON.stringify(session.counters));
      if (transport === "io_uring") assert.equal(session.counters.dev.requests, 1);
    } finally {
      await session.unmount();
    }
    assert.equal(isMounted(mnt), false);
  } finally {
    await cleanup();
  }
});

transportTest("hello: the event loop keeps running while requests flow", async (transport) => {
  const [mnt, cleanup] = await tempMountpoint();
  try {
    const session = await mount(hello, mnt, { handleSignals: false, transport });
    try {
      let ticks = 0;
      const timer = setInterval(() => ticks++, 5);
      // 2000 opens+reads from a child process keep the server busy.
      const load = await run(
        "sh",
        "-c",
        `for i in $(seq 2000); do cat ${mnt}/hello; done | wc -l`,
      );
      clearInterval(timer);
      assert.equal(load.stdout.trim(), "2000");
      // A frozen loop would fire no timer at all while the load ran.
      assert.ok(ticks > 5, `only ${ticks} timer ticks during the load`);
      assert.ok(served(session, transport) > 4000, JSON.stringify(session.counters));
    } finally {
      await session.unmount();
    }
  } finally {
    await cleanup();
  }
});

mountTest(
  "hello: the example runs with --allow-ffi only; SIGINT unmounts and exits 0",
  async () => {
    const [mnt, cleanup] = await tempMountpoint();
    try {
      const { child } = await startServer(["examples/hello.ts", mnt]);
      assert.equal((await run("cat", `${mnt}/hello`)).stdout, "Hello, World!\n");
      child.kill("SIGINT");
      assert.equal((await reap(child)).code, 0);
      assert.equal(isMounted(mnt), false);
    } finally {
      await cleanup();
    }
  },
);

transportTest(
  "hello: kill -9 of the server leaves ENOTCONN, a clear error, and umount -l clears it",
  async (transport) => {
    const [mnt, cleanup] = await tempMountpoint();
    try {
      const { child, out } = await startServer(["tests/fixtures/serve_hello.ts", mnt, transport]);
      assert.match(out, new RegExp(`over ${transport}`));
      assert.equal((await run("cat", `${mnt}/hello`)).stdout, "Hello, World!\n");
      child.kill("SIGKILL");
      await reap(child);
      assert.ok(isMounted(mnt));
      // The kernel ends the connection when the last reference to the device
      // goes; with io_uring the ring's teardown drops it a moment later.
      await waitFor(async () =>
        /Transport endpoint is not connected/.test((await run("stat", mnt)).stderr)
      );
      await assert.rejects(
        mount(hello, mnt, { handleSignals: false }),
        (e: Error) => e instanceof MountError && e.message.includes(`umount -l ${mnt}`),
      );
      assert.equal((await run("umount", "-l", mnt)).code, 0);
      await waitFor(() => Promise.resolve(!isMounted(mnt)));
    } finally {
      await cleanup();
    }
  },
);

mountTest(
  "mount: a missing or non-directory mountpoint is a clear error and mounts nothing",
  async () => {
    const [dir, cleanup] = await tempMountpoint();
    try {
      await assert.rejects(
        mount(hello, `${dir}/missing`, { handleSignals: false }),
        (e: Error) => e instanceof MountError && /does not exist/.test(e.message),
      );
      await Deno.writeTextFile(`${dir}/file`, "x");
      await assert.rejects(
        mount(hello, `${dir}/file`, { handleSignals: false }),
        (e: Error) => e instanceof MountError && /is not a directory/.test(e.message),
      );
      await assert.rejects(
        mount(hello, dir, { handleSignals: false, fsname: "bad,name" }),
        (e: Error) => e instanceof MountError && /must not contain/.test(e.message),
      );
      await assert.rejects(
        // deno-lint-ignore no-explicit-any
        mount(hello, dir, { handleSignals: false, transport: "carrier-pigeon" as any }),
        (e: Error) => e instanceof MountError && /unknown transport/.test(e.message),
      );
      assert.equal(isMounted(dir), false);
    } finally {
      await cleanup();
    }
  },
);

Deno.test("hello: a bad option or mountpoint is a one-line error with the right exit code", async () => {
  const bad = await run(
    deno,
    "run",
    "--allow-ffi",
    `${repo}examples/hello.ts`,
    "-o",
    "bogus",
    "/tmp",
  );
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /unknown mount option: bogus\nusage: /);
  const missing = await run(
    deno,
    "run",
    "--allow-ffi",
    `${repo}examples/hello.ts`,
    "/nonexistent/x",
  );
  assert.equal(missing.code, 1);
  assert.equal(
    missing.stderr.trim(),
    "examples/hello.ts: mountpoint /nonexistent/x does not exist",
  );
});

mountTest(
  "mount: the same file system twice on one directory is refused; another is reported",
  async () => {
    const [mnt, cleanup] = await tempMountpoint();
    const { child } = await startServer(["examples/hello.ts", mnt]);
    try {
      // As a script run twice would: the second hello refuses and the first still serves.
      const twice = await run(deno, "run", "--allow-ffi", `${repo}examples/hello.ts`, mnt);
      assert.equal(twice.code, 1);
      assert.match(twice.stderr, /is already a mount of hello \(fuse\.hello\): mounting again/);
      assert.equal((await run("cat", `${mnt}/hello`)).stdout, "Hello, World!\n");
      // Another file system may stack on it, and is told what it hides.
      const notices: string[] = [];
      const other = await mount(hello, mnt, {
        handleSignals: false,
        fsname: "other",
        onNotice: (m) => notices.push(m),
      });
      try {
        assert.match(
          notices.join("\n"),
          /mounting over hello \(fuse\.hello\) at .*, which it hides/,
        );
      } finally {
        await other.unmount();
      }
      assert.equal((await run("cat", `${mnt}/hello`)).stdout, "Hello, World!\n");
    } finally {
      await killServer(child);
      await cleanup();
    }
  },
);
