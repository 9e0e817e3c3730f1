// Signals as libfuse handles them: SIGINT, SIGTERM and SIGHUP unmount and
// exit; a second one, while a client keeps the mount busy, aborts the
// connection and exits instead of waiting for the client.
import assert from "node:assert/strict";
import {
  isMounted,
  reap,
  startServer,
  tempMountpoint,
  transportTest,
  waitFor,
} from "../helpers.ts";

function serve(src: string, mnt: string, transport: string) {
  return startServer([
    "examples/passthrough.ts",
    src,
    mnt,
    "-o",
    transport === "io_uring" ? "io_uring" : "no_io_uring",
  ]);
}

/** Whether `child` is still running after `ms`. */
async function stillRunning(child: Deno.ChildProcess, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const alive = await Promise.race([
    child.status.then(() => false),
    new Promise<boolean>((r) => timer = setTimeout(() => r(true), ms)),
  ]);
  clearTimeout(timer);
  return alive;
}

transportTest(
  "signals: SIGHUP unmounts and exits 0, as SIGINT and SIGTERM do",
  async (transport) => {
    const [mnt, cleanup] = await tempMountpoint();
    const src = await Deno.makeTempDir({ prefix: "denofuse-src-" });
    try {
      for (const signal of ["SIGHUP", "SIGINT", "SIGTERM"] as const) {
        const { child } = await serve(src, mnt, transport);
        await Deno.writeTextFile(`${mnt}/${signal}`, signal);
        child.kill(signal);
        assert.equal((await reap(child)).code, 0, signal);
        assert.equal(isMounted(mnt), false, signal);
        assert.equal(await Deno.readTextFile(`${src}/${signal}`), signal);
      }
    } finally {
      await cleanup();
      await Deno.remove(src, { recursive: true });
    }
  },
);

transportTest(
  "signals: a second SIGINT while a client holds the mount aborts the connection and exits",
  async (transport) => {
    const [mnt, cleanup] = await tempMountpoint();
    const src = await Deno.makeTempDir({ prefix: "denofuse-src-" });
    await Deno.writeTextFile(`${src}/f`, "content\n");
    let holder: Deno.ChildProcess | null = null;
    try {
      const { child } = await serve(src, mnt, transport);
      // A shell whose working directory is in the mount keeps it busy; it
      // reads through the mount each time it is told to.
      holder = new Deno.Command("sh", {
        args: ["-c", 'cd "$0" && echo in && while read _; do cat f 2>&1; done', mnt],
        stdin: "piped",
        stdout: "piped",
      }).spawn();
      const lines = holder.stdout.pipeThrough(new TextDecoderStream()).getReader();
      const writer = holder.stdin.getWriter();
      let buffered = "";
      const next = async () => {
        while (!buffered.includes("\n")) {
          const { value, done } = await lines.read();
          if (done) break;
          buffered += value;
        }
        const line = buffered.slice(0, buffered.indexOf("\n") + 1);
        buffered = buffered.slice(line.length);
        return line;
      };
      assert.equal(await next(), "in\n");
      child.kill("SIGINT");
      // Busy: detached from the tree, still served for the shell inside.
      await waitFor(() => Promise.resolve(!isMounted(mnt)));
      await writer.write(new TextEncoder().encode("\n"));
      assert.equal(await next(), "content\n");
      assert.ok(await stillRunning(child, 300), "the first SIGINT ended the server");
      // And says why it goes on.
      const err = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
      let said = "";
      while (!said.includes("aborts")) {
        const { value, done } = await err.read();
        if (done) break;
        said += value;
      }
      assert.match(
        said,
        /is busy: detached, and served until the processes using it leave; SIGINT again aborts the connection/,
      );
      await err.cancel();
      child.kill("SIGINT");
      const status = await reap(child);
      assert.equal(status.code, 0);
      await writer.write(new TextEncoder().encode("\n"));
      assert.match(await next(), /Transport endpoint is not connected|connection abort/);
      await writer.close();
      await lines.cancel();
      await holder.status;
      holder = null;
    } finally {
      try {
        holder?.kill("SIGKILL");
      } catch { /* gone */ }
      await cleanup();
      await Deno.remove(src, { recursive: true });
    }
  },
);
