// Notifications through a real mount: a file system whose content changes
// on its own stays fresh under hour-long caches (examples/clock.ts), and
// store / retrieve / inval_entry reach the kernel's caches.
import assert from "node:assert/strict";
import { mount } from "../../mod.ts";
import { counted } from "../fixtures/counted_fs.ts";
import { reap, run, startServer, tempMountpoint, transportTest } from "../helpers.ts";

transportTest(
  "notify: the clock example's file and names change under long caches",
  async (transport) => {
    const [mnt, cleanup] = await tempMountpoint();
    try {
      const { child } = await startServer([
        "examples/clock.ts",
        mnt,
        "-o",
        transport === "io_uring" ? "io_uring" : "no_io_uring",
      ]);
      try {
        const first = (await run("cat", `${mnt}/now`)).stdout;
        const name = (await run("ls", `${mnt}/seconds`)).stdout.trim();
        assert.match(first, /^\d{4}-\d\d-\d\dT/);
        await new Promise((r) => setTimeout(r, 2100));
        // Cached for an hour, yet new: the clock invalidated the inode's pages
        // and size, and deleted the old second's name.
        const second = (await run("cat", `${mnt}/now`)).stdout;
        assert.notEqual(second, first);
        assert.ok(
          Date.parse(second.trim()) - Date.parse(first.trim()) >= 1000,
          `${first} -> ${second}`,
        );
        const names = (await run("ls", `${mnt}/seconds`)).stdout.trim();
        assert.notEqual(names, name);
        assert.equal((await run("stat", `${mnt}/seconds/${name}`)).code, 1);
      } finally {
        child.kill("SIGINT");
        assert.equal((await reap(child)).code, 0);
      }
    } finally {
      await cleanup();
    }
  },
);

for (const threads of [1, undefined]) {
  transportTest(
    `notify: store fills the page cache, retrieve reads it back, inval_entry forgets a name (${
      threads ? "one thread" : "a thread per CPU"
    })`,
    async (transport) => {
      const [mnt, cleanup] = await tempMountpoint();
      const content = new TextEncoder().encode("from the server\n");
      const { fs, stats } = counted(content);
      const session = await mount(fs, mnt, {
        transport,
        // With queue threads, the NOTIFY_REPLY they read is handed over to this thread.
        threads,
        handleSignals: false,
        entryTimeout: 3600,
        attrTimeout: 3600,
      });
      try {
        assert.equal((await run("cat", `${mnt}/f`)).stdout, "from the server\n");
        const reads = stats.reads;
        // Replace the cached pages (same length, so the page is whole and up to date).
        assert.equal(
          session.notify.store(2, 0, new TextEncoder().encode("stored by notif\n")),
          true,
        );
        assert.equal((await run("cat", `${mnt}/f`)).stdout, "stored by notif\n");
        assert.equal(stats.reads, reads, "a READ reached the server despite the stored page");
        // What the kernel has cached comes back.
        const back = await session.notify.retrieve(2, 0, 4096);
        assert.equal(new TextDecoder().decode(back), "stored by notif\n");
        // Unknown nodes and names are reported, not thrown.
        assert.equal(session.notify.invalInode(999), false);
        assert.equal(session.notify.invalEntry(1, "missing"), false);
        // A cached name is forgotten: the next use looks it up again.
        const lookups = stats.lookups;
        assert.equal(session.notify.invalEntry(1, "f"), true);
        await run("stat", `${mnt}/f`);
        assert.equal(stats.lookups, lookups + 1);
        // Dropping the pages brings the server's content back.
        assert.equal(session.notify.invalInode(2), true);
        assert.equal((await run("cat", `${mnt}/f`)).stdout, "from the server\n");
      } finally {
        await session.unmount();
        await cleanup();
      }
    },
  );
}
