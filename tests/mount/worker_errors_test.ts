// A serving thread runs bundled code from a blob: URL; what it logs must
// still name the author's source file and line (server/workers/stack_map.ts).
import assert from "node:assert/strict";
import { killServer, run, startServer, tempMountpoint, transportTest } from "../helpers.ts";
import { possibleCpus } from "../../server/uring/transport.ts";

/** The line of throwing_fs.ts that throws in a serving thread. */
async function throwingLine(): Promise<number> {
  const text = await Deno.readTextFile(new URL("../fixtures/throwing_fs.ts", import.meta.url));
  return text.split("\n").findIndex((l) => l.includes("throw new Error(")) + 1;
}

transportTest(
  "serving threads: a FileSystem that throws logs its source file and line, not the bundle's",
  async (transport) => {
    const [mnt, cleanup] = await tempMountpoint();
    const { child } = await startServer(["tests/fixtures/serve_throwing.ts", mnt, transport]);
    const log = new Response(child.stderr).text();
    try {
      // On /dev/fuse the session's thread reads requests too: read from every
      // CPU until a serving thread has answered one (it fails with EIO).
      let failed = 0;
      for (let i = 0; i < 20 * possibleCpus() && failed === 0; i++) {
        const cat = await run("taskset", "-c", String(i % possibleCpus()), "cat", `${mnt}/boom`);
        if (cat.code !== 0) {
          assert.match(cat.stderr, /Input\/output error/);
          failed++;
        }
      }
      assert.equal(failed, 1, "no read reached a serving thread");
      child.kill("SIGTERM");
      assert.equal((await child.status).code, 0);
      const text = await log;
      assert.match(text, /read went wrong in a serving thread/);
      const line = await throwingLine();
      assert.match(text, new RegExp(`/tests/fixtures/throwing_fs\\.ts:${line}:\\d+`), text);
      assert.doesNotMatch(text, /blob:/);
    } finally {
      await killServer(child);
      await log.catch(() => "");
      await cleanup();
    }
  },
);
