// Serving Workers run bundles from blob: URLs, which Deno does not source-map:
// the bundle carries its map, and the Worker maps its own stack traces.
import assert from "node:assert/strict";
import { bundleQueueModule } from "../../server/workers/bundle.ts";
import { QueueWorkerHandle, workerUrl } from "../../server/workers/handle.ts";
import type { ThreadSetup } from "../../server/workers/messages.ts";
import { withStackMap } from "../../server/workers/stack_map.ts";
import { QUEUE_WORKER_SOURCE } from "../../gen/queue_worker_source.ts";

/** A setup that reaches the FileSystem factory (and no further: no fd is used before it). */
const SETUP = {
  kind: "dev",
  fuseFd: -1,
  backingFds: { fds: new SharedArrayBuffer(8), windows: new SharedArrayBuffer(16) },
  interrupts: new SharedArrayBuffer(4096),
  counters: new SharedArrayBuffer(32),
  backingIo: "direct",
  debug: false,
  connection: {} as ThreadSetup["connection"],
  slots: 1,
  slotSize: 4096,
  index: 0,
} as ThreadSetup;

/** Start `source` in a Worker with `setup` and give the reason it refused. */
async function refusal(source: string, setup: ThreadSetup): Promise<string> {
  const url = workerUrl(source);
  const handle = new QueueWorkerHandle(url, "test thread", setup, () => {});
  try {
    const answer = await handle.answered;
    assert.equal(answer.type, "refused");
    return answer.type === "refused" ? answer.reason : "";
  } finally {
    handle.worker.terminate();
    URL.revokeObjectURL(url);
  }
}

Deno.test("stack map: an author's factory that throws is reported at its file and line", async () => {
  const fixture = new URL("../fixtures/refusing_queue.ts", import.meta.url);
  const reason = await refusal(await bundleQueueModule(fixture), SETUP);
  const line = (await Deno.readTextFile(fixture)).split("\n")
    .findIndex((l) => l.includes("throw new Error(")) + 1;
  assert.match(reason, /^no file system for this thread \(at /);
  assert.ok(reason.includes(`${fixture.pathname}:${line}:`), reason);
});

Deno.test("stack map: the library's bundle maps its own frames to ops/ and server/", async () => {
  // A connection without flags fails in the dispatcher, inside the bundle.
  const reason = await refusal(QUEUE_WORKER_SOURCE, SETUP);
  const [, file, line] = reason.match(/\(at ((?:ops|server|ffi)\/[\w/]+\.ts):(\d+):\d+\)$/) ?? [];
  assert.ok(file, reason);
  const text = (await Deno.readTextFile(new URL(`../../${file}`, import.meta.url))).split("\n");
  // The line named is real code of that file that handles INIT's flags.
  assert.match(text[Number(line) - 1], /flags/, `${file}:${line}: ${text[Number(line) - 1]}`);
});

Deno.test("stack map: a bundle without an inline map is refused", () => {
  assert.throws(() => withStackMap("var x = 1;\n"), /no inline source map/);
});
