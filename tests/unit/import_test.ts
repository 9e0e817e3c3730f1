// Importing the package has no side effects: libc and liburing are opened on
// first use, so a module that only imports mod.ts (for its types, or for
// constants such as S and Errno) runs with no permissions at all.
import assert from "node:assert/strict";

Deno.test("import: mod.ts loads without --allow-ffi; libc opens on first use", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const script = `${dir}/uses_types.ts`;
    await Deno.writeTextFile(
      script,
      `import { Errno, errnoName, S, type FileSystem } from "${
        new URL("../../mod.ts", import.meta.url).href
      }";\n` +
        `const fs: FileSystem = { getattr: () => ({ ino: 1, mode: S.IFDIR | 0o755 }) };\n` +
        `console.log(errnoName(Errno.ENOENT), typeof fs.getattr);\n`,
    );
    const run = (...flags: string[]) =>
      new Deno.Command(Deno.execPath(), {
        args: ["run", "--no-prompt", ...flags, script],
        stdout: "piped",
        stderr: "piped",
      }).output();
    const out = await run();
    const text = new TextDecoder();
    assert.equal(out.code, 0, text.decode(out.stderr));
    assert.equal(text.decode(out.stdout), "ENOENT function\n");
    // Calling into libc is what needs the permission.
    await Deno.writeTextFile(
      script,
      `import { libc } from "${new URL("../../ffi/libc.ts", import.meta.url).href}";\n` +
        `console.log(libc.getpid() > 0);\n`,
    );
    const denied = await run();
    assert.notEqual(denied.code, 0);
    assert.match(text.decode(denied.stderr), /--allow-ffi/);
    const allowed = await run("--allow-ffi");
    assert.equal(text.decode(allowed.stdout), "true\n");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("docs: no public function or method has a default parameter (deno doc shows those as required)", async () => {
  const root = new URL("../..", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["doc", "--json", "mod.ts", "testing.ts", "passthrough.ts"],
    cwd: root,
    stdout: "piped",
  }).output();
  const doc = JSON.parse(new TextDecoder().decode(out.stdout));
  const found: string[] = [];
  const walk = (o: unknown, where: string): void => {
    if (Array.isArray(o)) return o.forEach((v) => walk(v, where));
    if (typeof o !== "object" || o === null) return;
    const r = o as Record<string, unknown>;
    const name = typeof r.name === "string" ? `${where}.${r.name}` : where;
    if (r.kind === "assign") found.push(`${where}: ${JSON.stringify(r.left)} = ${r.right}`);
    for (const v of Object.values(r)) walk(v, name);
  };
  walk(doc.nodes, "");
  assert.ok(Object.keys(doc.nodes).length >= 3);
  assert.deepEqual(found, [], "write `name?: type` and apply the default inside");
});

Deno.test("docs: deno doc --lint finds every public export documented and every type it uses public", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["doc", "--lint", "mod.ts", "testing.ts", "passthrough.ts"],
    cwd: new URL("../..", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const text = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, text.slice(0, 3000));
});
