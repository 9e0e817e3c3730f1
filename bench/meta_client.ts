/**
 * The metadata client of the benchmark: create (open O_CREAT|O_EXCL and
 * close), stat and unlink COUNT files in DIR, with direct libc calls so the
 * client's own cost is small and the same for every configuration. Prints
 * one JSON line: `{"create": s, "stat": s, "unlink": s, "total": s}`.
 *
 *     deno run --allow-ffi bench/meta_client.ts DIR COUNT
 *
 * @module
 */

import { check, cstr, libc, O } from "../ffi/libc.ts";

const [dir, countArg] = Deno.args;
const count = Number(countArg);
if (!dir || !(count > 0)) {
  console.error("usage: meta_client.ts DIR COUNT");
  Deno.exit(2);
}
const names = Array.from({ length: count }, (_, i) => cstr(`${dir}/f${i}`));
const statBuf = new Uint8Array(256);
const STATX_BASIC_STATS = 0x7ff;

function phase(fn: (name: Uint8Array<ArrayBuffer>) => void): number {
  const start = performance.now();
  for (const name of names) fn(name);
  return (performance.now() - start) / 1000;
}

const create = phase((n) =>
  check(
    libc.close(check(libc.open(n, O.CREAT | O.EXCL | O.WRONLY | O.CLOEXEC, 0o644), "open")),
    "close",
  )
);
const stat = phase((n) => check(libc.statx(-100, n, 0, STATX_BASIC_STATS, statBuf), "statx"));
const unlink = phase((n) => check(libc.unlinkat(-100, n, 0), "unlinkat"));
console.log(JSON.stringify({ create, stat, unlink, total: create + stat + unlink }));
