// The queue Worker runs from generated code (server/gen/), since a Worker
// started under --allow-ffi alone cannot load module files: it must be
// what `deno task bundle` makes from today's sources.
import assert from "node:assert/strict";
import { generate } from "../scripts/bundle.ts";
import { QUEUE_WORKER_SOURCE } from "../server/gen/queue_worker_source.ts";

Deno.test("bundle: server/gen/queue_worker_source.ts is fresh (else run: deno task bundle)", async () => {
  const committed = await Deno.readTextFile(
    new URL("../server/gen/queue_worker_source.ts", import.meta.url),
  );
  assert.ok(committed === await generate(), "stale: run `deno task bundle` and commit the result");
  // Self-contained: no import left for a Worker without read permission to fail on.
  assert.doesNotMatch(QUEUE_WORKER_SOURCE, /^\s*import\s/m);
  assert.match(QUEUE_WORKER_SOURCE, /serveQueueThread\(\);\s*$/);
});
