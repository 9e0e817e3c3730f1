// The layering of the library, checked on its real module graph (`deno info
// --json`, type-only imports included): data flows kernel -> transport ->
// ops -> FileSystem, and imports only point down.
//
//   ffi/              system calls, liburing, kernel structs      imports only ffi/
//   ops/              the protocol: requests, answers, dispatch   imports ops/, ffi/
//   fs/               file systems built on the library           imports fs/, ops/, ffi/, and
//                                                                 server/queue_thread.ts (the
//                                                                 entry of a per-queue module)
//   server/mount/     mount(2), fusermount3, the device           imports mount/
//   server/io/        what both transports share: the request     imports io/
//                     slot, backing I/O, the serving loop's yield
//   server/workers/   serving Workers: messages, handle, bundling imports workers/, mount/
//   server/dev/       the /dev/fuse transport and its threads     imports dev/, io/, mount/, workers/
//   server/uring/     the io_uring transport, its queues, modes   imports uring/, io/, mount/, workers/
//   server/*.ts       the session, command line, probe, and the   imports any of server/
//                     Worker entry (queue_thread.ts)
//
// Everything in server/ may import ops/ and ffi/; dev/ and uring/ never
// import each other; and no module imports itself back through others (no
// cycles).
import assert from "node:assert/strict";

const repo = new URL("../..", import.meta.url);
/** The modules the graph is taken from: every public entry and Worker entry. */
const ENTRIES = [
  "mod.ts",
  "passthrough.ts",
  "testing.ts",
  "server/queue_worker.ts",
  "fs/passthrough_queue.ts",
];

/** Module → the project modules it imports (paths relative to the repo). */
type Graph = Map<string, string[]>;

/** `server/` inside it may import these of its folders (and ops/, ffi/). */
const serverMay = (...folders: string[]) => (to: string) =>
  /^(ops|ffi)\//.test(to) || folders.some((f) => to.startsWith(`server/${f}/`));

/** The rule each layer keeps: may a module of it import `to`? */
const RULES: Record<string, (to: string) => boolean> = {
  ffi: (to) => to.startsWith("ffi/"),
  ops: (to) => /^(ops|ffi)\//.test(to),
  fs: (to) => /^(fs|ops|ffi)\//.test(to) || to === "server/queue_thread.ts",
  "server/mount": serverMay("mount"),
  "server/io": serverMay("io"),
  "server/workers": serverMay("workers", "mount"),
  "server/dev": serverMay("dev", "io", "mount", "workers"),
  "server/uring": serverMay("uring", "io", "mount", "workers"),
  server: (to) => /^(server|ops|ffi)\//.test(to),
};

/** The layer of a module: its folder, and for server/ its subfolder. */
function layerOf(path: string): string {
  const parts = path.split("/");
  return parts[0] === "server" && parts.length > 2 ? `server/${parts[1]}` : parts[0];
}

/** Every import that breaks a folder rule, and every cycle, as readable lines. */
export function violations(graph: Graph): string[] {
  const found: string[] = [];
  for (const [from, deps] of graph) {
    const rule = RULES[layerOf(from)];
    if (!rule || !from.includes("/")) continue;
    for (const to of deps) if (!rule(to)) found.push(`${from} imports ${to}`);
  }
  const state = new Map<string, "open" | "done">();
  const path: string[] = [];
  const visit = (m: string) => {
    state.set(m, "open");
    path.push(m);
    for (const d of graph.get(m) ?? []) {
      if (state.get(d) === "open") {
        found.push(`cycle: ${[...path.slice(path.indexOf(d)), d].join(" -> ")}`);
      } else if (!state.has(d)) visit(d);
    }
    path.pop();
    state.set(m, "done");
  };
  for (const m of graph.keys()) if (!state.has(m)) visit(m);
  return found;
}

/** The project's module graph, from `deno info --json` of the entries. */
async function moduleGraph(): Promise<Graph> {
  const graph: Graph = new Map();
  for (const entry of ENTRIES) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["info", "--json", entry],
      cwd: repo.pathname,
      stdout: "piped",
      stderr: "inherit",
    }).output();
    assert.ok(out.success, `deno info ${entry}`);
    const info = JSON.parse(new TextDecoder().decode(out.stdout));
    const local = (s: string | undefined) =>
      s?.startsWith(repo.href) && !s.includes("/gen/") ? s.slice(repo.href.length) : null;
    for (const m of info.modules) {
      const from = local(m.specifier);
      if (!from) continue;
      const deps: string[] = (m.dependencies ?? []).flatMap((
        d: Record<string, { specifier?: string }>,
      ) => [local(d.code?.specifier), local(d.type?.specifier)].filter((x): x is string => !!x));
      graph.set(from, [...new Set(deps)]);
    }
  }
  return graph;
}

Deno.test("imports: the checker finds a wrong import and a cycle", () => {
  assert.deepEqual(
    violations(
      new Map([
        ["ffi/ring.ts", ["ffi/libc.ts", "ops/abi.ts"]],
        ["ops/a.ts", ["ops/b.ts"]],
        ["ops/b.ts", ["ops/a.ts", "ffi/libc.ts"]],
        ["fs/x.ts", ["server/queue_thread.ts", "server/io/direct_io.ts"]],
        ["server/dev/threads.ts", ["server/workers/handle.ts", "server/uring/queues.ts"]],
        ["server/io/ring_io.ts", ["ffi/ring.ts", "server/session.ts"]],
        ["server/session.ts", ["server/uring/queues.ts", "server/dev/threads.ts"]],
        ["ffi/libc.ts", []],
      ]),
    ),
    [
      "ffi/ring.ts imports ops/abi.ts",
      "fs/x.ts imports server/io/direct_io.ts",
      "server/dev/threads.ts imports server/uring/queues.ts",
      "server/io/ring_io.ts imports server/session.ts",
      "cycle: ops/a.ts -> ops/b.ts -> ops/a.ts",
    ],
  );
});

Deno.test("imports: ffi/, ops/, fs/, server/ and its folders keep their layers, without cycles", async () => {
  const graph = await moduleGraph();
  assert.ok(graph.size > 40, `only ${graph.size} modules found`);
  assert.ok(graph.has("ops/dispatch.ts") && graph.has("fs/passthrough.ts"));
  assert.deepEqual(violations(graph), []);
});
