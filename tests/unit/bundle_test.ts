// Workers run from generated code (gen/), since a Worker
// started under --allow-ffi alone cannot load module files: each must be
// what `deno task bundle` makes from today's sources.
import assert from "node:assert/strict";
import { generate, TARGETS } from "../../scripts/bundle.ts";

for (const t of TARGETS) {
  Deno.test(`bundle: ${t.output} is fresh (else run: deno task bundle)`, async () => {
    const committed = await Deno.readTextFile(new URL(`../../${t.output}`, import.meta.url));
    assert.ok(
      committed === await generate(t),
      "stale: run `deno task bundle` and commit the result",
    );
    const { [t.constant]: source } = await import(`../../${t.output}`);
    // Self-contained: no import left for a Worker without read permission to fail on.
    assert.doesNotMatch(source, /^import\s/m);
    assert.match(source, /serveQueueThread\(/);
  });
}
