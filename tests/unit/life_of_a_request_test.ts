// docs/life_of_a_request.md walks a READ and a LOOKUP through named files
// and functions: every one it names must exist, or the walk is stale.
import assert from "node:assert/strict";

const root = new URL("../../", import.meta.url);
const read = (path: string) => Deno.readTextFileSync(new URL(path, root));
const DOC = "docs/life_of_a_request.md";

/** Every library source file, by path. */
function sources(): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (dir: string) => {
    for (const e of Deno.readDirSync(new URL(dir, root))) {
      const path = `${dir}/${e.name}`;
      if (e.isDirectory && e.name !== "gen") walk(path);
      else if (e.name.endsWith(".ts")) out.set(path, read(path));
    }
  };
  for (const dir of ["ffi", "ops", "server", "fs"]) walk(dir);
  return out;
}

const escape = (s: string) => s.replace(/[$#]/g, (c) => `\\${c}`);

/** Whether `text` declares `name` at top level (function, class, interface, const, type). */
function declares(text: string, name: string): boolean {
  const n = escape(name);
  return new RegExp(`^export (?:async )?(?:function|class|interface|const|type) ${n}\\b`, "m")
    .test(text) || new RegExp(`^(?:async )?function ${n}\\b`, "m").test(text);
}

/** Whether `text` declares a member `name` of a class or interface (method or field). */
function hasMember(text: string, name: string): boolean {
  const n = escape(name);
  const modifiers = "(?:(?:static|private|protected|public|readonly|override|async|get|set) )*";
  return new RegExp(`^\\s+${modifiers}${n}\\s*(?:<[^>]*>)?[(?!:=]`, "m").test(text);
}

/** What is wrong with the names `doc` gives, against `files`. */
export function staleNames(doc: string, files: Map<string, string>): string[] {
  const wrong: string[] = [];
  const fileOf = (type: string) =>
    [...files].find(([, text]) =>
      new RegExp(`^(?:export )?(?:abstract )?(?:class|interface) ${type}\\b`, "m").test(text)
    );
  for (const [, path] of doc.matchAll(/`([\w/]+\.ts)`/g)) {
    if (!files.has(path) && !/^(tests|examples|gen)\//.test(path)) wrong.push(`no file ${path}`);
  }
  for (const [, path, name] of doc.matchAll(/`([\w/]+\.ts)` `([#\w]+)`/g)) {
    const text = files.get(path);
    if (text && !declares(text, name)) wrong.push(`${path} has no ${name}`);
  }
  for (const [, type, member] of doc.matchAll(/`([A-Z]\w*)\.(#?\w+)`/g)) {
    const found = fileOf(type);
    if (!found) wrong.push(`no class or interface ${type}`);
    else if (!hasMember(found[1], member)) wrong.push(`${found[0]}: ${type} has no ${member}`);
  }
  return wrong;
}

Deno.test("life of a request: the checker finds a name that is gone", () => {
  const files = new Map([[
    "ops/a.ts",
    "export class A {\n  run(): void {}\n}\nfunction go() {}\n",
  ]]);
  assert.deepEqual(staleNames("`ops/a.ts` `go`, `A.run`", files), []);
  assert.deepEqual(
    staleNames("`ops/a.ts` `gone`, `A.#walk`, `B.run`, `ops/b.ts`", files),
    [
      "no file ops/b.ts",
      "ops/a.ts has no gone",
      "ops/a.ts: A has no #walk",
      "no class or interface B",
    ],
  );
});

Deno.test("life of a request: every file and function the walk names exists", () => {
  const doc = read(DOC);
  const named = [...doc.matchAll(/`([A-Z]\w*)\.(#?\w+)`|`([\w/]+\.ts)` `([#\w]+)`/g)].length;
  assert.ok(named > 30, `only ${named} names found in ${DOC}`);
  assert.deepEqual(staleNames(doc, sources()), []);
});
