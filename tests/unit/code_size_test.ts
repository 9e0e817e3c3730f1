// The library stays walkable: no source file in ffi/, ops/, server/ or fs/
// over 600 lines, no function or method over 80 (generated code aside).
// Lengths are read from deno-fmt'ed text: a declaration (a line that opens
// a function or method and ends in "{" or, for a wrapped signature, "(")
// up to the closing brace at its own indentation.
import assert from "node:assert/strict";

const MAX_FILE_LINES = 600;
const MAX_FUNCTION_LINES = 80;
const FOLDERS = ["ffi", "ops", "server", "fs"];

const DECLARATION =
  /^(\s*)(?:export\s+)?(?:default\s+)?(?:async\s+)?(?:function\s*\*?\s*([\w$]+)|(?:(?:static|private|protected|public|readonly|override|async|get|set)\s+)*([#\w$]+)\s*(?:<[^>]*>)?\()/;
const NOT_A_DECLARATION = /^\s*(if|for|while|switch|catch|return|const|let|new|await|throw|else)\b/;

/** Each function or method in `text` with its length in lines. */
export function functionLengths(text: string): { name: string; line: number; length: number }[] {
  const lines = text.split("\n");
  const found: { name: string; line: number; length: number }[] = [];
  lines.forEach((l, i) => {
    const m = DECLARATION.exec(l);
    if (!m || NOT_A_DECLARATION.test(l) || !/[{(]$/.test(l)) return;
    const indent = m[1];
    let open = i;
    if (!l.endsWith("{")) {
      // A wrapped signature closes its parameters at its own indent and opens
      // the body there; a wrapped call closes with ")" and no body.
      open = lines.findIndex((x, k) => k > i && x.startsWith(`${indent})`));
      if (open < 0 || !lines[open].endsWith("{")) return;
    }
    for (let k = open + 1; k < lines.length; k++) {
      if (
        lines[k] === `${indent}}` ||
        /^\s*\}[;,)]*$/.test(lines[k]) && lines[k].startsWith(`${indent}}`)
      ) {
        found.push({ name: m[2] ?? m[3], line: i + 1, length: k - i + 1 });
        return;
      }
    }
  });
  return found;
}

/** Every source file of the library (relative paths), generated code aside. */
function sourceFiles(): string[] {
  const root = new URL("../../", import.meta.url);
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of Deno.readDirSync(new URL(dir, root))) {
      const path = `${dir}/${e.name}`;
      if (e.isDirectory && e.name !== "gen") walk(path);
      else if (e.isFile && e.name.endsWith(".ts")) out.push(path);
    }
  };
  for (const f of FOLDERS) walk(f);
  return out;
}

const read = (path: string) => Deno.readTextFileSync(new URL(`../../${path}`, import.meta.url));

Deno.test("code size: the scanner measures functions and methods, wrapped or not", () => {
  const body = Array.from({ length: 90 }, (_, i) => `    x += ${i};`).join("\n");
  const text = [
    "export function short(a: number): number {",
    "  return a;",
    "}",
    "class A {",
    "  async #long(",
    "    a: number,",
    "  ): Promise<number> {",
    "    let x = a;",
    body,
    "    call(a,",
    "      b);",
    "    return x;",
    "  }",
    "}",
  ].join("\n");
  assert.deepEqual(functionLengths(text), [
    { name: "short", line: 1, length: 3 },
    { name: "#long", line: 5, length: 98 },
  ]);
  // And on the real code: the command line's parser is found, whole.
  const parse = functionLengths(read("server/cli.ts")).find((f) => f.name === "parseMountArgs");
  assert.ok(parse && parse.length > 15, JSON.stringify(parse));
});

Deno.test(`code size: files <= ${MAX_FILE_LINES} lines, functions <= ${MAX_FUNCTION_LINES}`, () => {
  const files = sourceFiles();
  assert.ok(files.length > 60, `only ${files.length} files found`);
  const long: string[] = [];
  let functions = 0;
  for (const path of files) {
    const text = read(path);
    const lines = text.split("\n").length - 1;
    if (lines > MAX_FILE_LINES) long.push(`${path}: ${lines} lines`);
    for (const f of functionLengths(text)) {
      functions++;
      if (f.length > MAX_FUNCTION_LINES) {
        long.push(`${path}:${f.line} ${f.name}: ${f.length} lines`);
      }
    }
  }
  assert.ok(functions > 500, `only ${functions} functions found`);
  assert.deepEqual(long, []);
});
