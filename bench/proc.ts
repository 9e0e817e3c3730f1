/**
 * What the benchmarks ask of the system: run a shell command, read a
 * process's memory from /proc.
 *
 * @module
 */

import { readSmallFile } from "../ffi/libc.ts";

/** Run `cmd` with sh; its stdout, or an Error with its stderr if it failed. */
export async function sh(cmd: string): Promise<string> {
  const out = await new Deno.Command("sh", { args: ["-c", cmd], stdout: "piped", stderr: "piped" })
    .output();
  const dec = new TextDecoder();
  if (!out.success) throw new Error(`${cmd}: ${dec.decode(out.stderr)}`);
  return dec.decode(out.stdout);
}

/** A memory field of `/proc/PID/status` in KiB: `VmRSS` now, `VmHWM` its peak (0 if gone). */
export function memoryKiB(pid: number, field: "VmRSS" | "VmHWM"): number {
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readSmallFile(`/proc/${pid}/status`));
  return m ? Number(m[1]) : 0;
}
