/**
 * Stack traces of serving Workers that name the source file and line.
 *
 * A Worker runs bundled code from a blob: URL, and Deno does not apply a
 * blob's inline source map (checked on 2.9.6): a trace would point at
 * `blob:null/…:5380`. So a bundle begins with its own map as data
 * ({@linkcode withStackMap}), and the Worker installs an
 * `Error.prepareStackTrace` that maps each frame of the bundle back to
 * `server/uring/transport.ts:123:5` ({@linkcode installStackMap}). Only
 * what a location needs is kept: the source names and the mappings.
 *
 * @module
 */

/** A bundle's source map, as much of it as stack traces need. */
export interface StackMap {
  /** The source files, as the bundler named them. */
  sources: string[];
  /** The mappings (source map v3, base64 VLQ). */
  mappings: string;
}

const KEY = "__denofuseStackMap";
const INLINE_MAP = "//# sourceMappingURL=data:application/json;base64,";

/**
 * `code` (what `deno bundle --sourcemap=inline` printed) with its inline
 * map moved into a first line that {@linkcode installStackMap} reads;
 * `source` renames each source (e.g. to an absolute path).
 */
export function withStackMap(code: string, source = (s: string) => s): string {
  const at = code.lastIndexOf(INLINE_MAP);
  if (at < 0) throw new Error("the bundle has no inline source map");
  const map = JSON.parse(atob(code.slice(at + INLINE_MAP.length).trim()));
  // The first line is the map itself: the mappings start one line down.
  const data: StackMap = { sources: map.sources.map(source), mappings: ";" + map.mappings };
  return `globalThis.${KEY} = ${JSON.stringify(data)};\n${code.slice(0, at)}`;
}

/** A source position: source index, line and column (all 0-based). */
type Position = [source: number, line: number, column: number];

const BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/** Per generated line, its segments as [column, source, line, column], sorted by column. */
function decode(mappings: string): number[][][] {
  const lines: number[][][] = [];
  const state = [0, 0, 0, 0]; // source, line, column carry over between lines
  for (const text of mappings.split(";")) {
    const segments: number[][] = [];
    let column = 0;
    for (const segment of text.split(",")) {
      if (segment === "") continue;
      const fields: number[] = [];
      let value = 0, shift = 0;
      for (const ch of segment) {
        const digit = BASE64.indexOf(ch);
        value += (digit & 31) << shift;
        if (digit & 32) shift += 5;
        else {
          fields.push(value & 1 ? -(value >>> 1) : value >>> 1);
          value = shift = 0;
        }
      }
      column += fields[0];
      if (fields.length < 4) continue;
      for (let i = 1; i < 4; i++) state[i - 1] += fields[i];
      segments.push([column, state[0], state[1], state[2]]);
    }
    lines.push(segments);
  }
  return lines;
}

/** Where generated `line`:`column` (1-based, as V8 gives them) came from. */
function lookup(lines: number[][][], line: number, column: number): Position | null {
  const segments = lines[line - 1];
  let found: number[] | null = null;
  for (const s of segments ?? []) {
    if (s[0] > column - 1) break;
    found = s;
  }
  return found ? [found[1], found[2], found[3]] : null;
}

/** A V8 call site, as `Error.prepareStackTrace` receives it. */
interface CallSite {
  getFileName(): string | null | undefined;
  getLineNumber(): number | null;
  getColumnNumber(): number | null;
  toString(): string;
}

/**
 * In a Worker that runs a bundle made by {@linkcode withStackMap}: make
 * every stack trace name source files and lines. Does nothing elsewhere.
 */
export function installStackMap(): void {
  const g = globalThis as unknown as Record<string, StackMap | undefined>;
  const map = g[KEY];
  if (!map) return;
  let lines: number[][][] | null = null;
  const E = Error as unknown as { prepareStackTrace?: (e: Error, s: CallSite[]) => string };
  E.prepareStackTrace = (error, sites) => {
    const frames = sites.map((site) => {
      const text = String(site);
      const file = site.getFileName();
      const line = site.getLineNumber(), column = site.getColumnNumber();
      if (!file?.startsWith("blob:") || line === null || column === null) return text;
      lines ??= decode(map.mappings);
      const at = lookup(lines, line, column);
      if (!at) return text;
      const where = `${map.sources[at[0]]}:${at[1] + 1}:${at[2] + 1}`;
      return text.replace(`${file}:${line}:${column}`, where);
    });
    return `${error}${frames.map((f) => `\n    at ${f}`).join("")}`;
  };
}

/** `e`'s message and where it was thrown (its first stack frame), for a one-line report. */
export function messageAndPlace(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  const frame = e.stack?.split("\n").find((l) => l.startsWith("    at "));
  const place = frame?.match(/\(([^()]+)\)$/)?.[1] ?? frame?.slice(7);
  return place ? `${e.message} (at ${place})` : e.message;
}
