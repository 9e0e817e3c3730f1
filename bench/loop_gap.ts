/**
 * Measures the worst event-loop gap of a serving process: a 1 ms interval
 * timer runs while two shells hammer a mounted hello file system with
 * open/read/close cycles, and the longest time between two ticks is reported
 * (with the same measurement on an idle loop as the baseline).
 *
 *     ./deno run -A bench/loop_gap.ts [SECONDS] [dev|io_uring]
 *
 * @module
 */

import { hello } from "../examples/hello.ts";
import { mount, type TransportChoice } from "../mod.ts";

const seconds = Number(Deno.args[0] ?? 5);
const transport = (Deno.args[1] ?? "auto") as TransportChoice;

async function measure(during: () => Promise<unknown>): Promise<{ worst: number; ticks: number }> {
  let last = performance.now();
  let worst = 0;
  let ticks = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    worst = Math.max(worst, now - last);
    last = now;
    ticks++;
  }, 1);
  await during();
  clearInterval(timer);
  return { worst, ticks };
}

const mnt = await Deno.makeTempDir({ prefix: "denofuse-gap-" });
const session = await mount(hello, mnt, { handleSignals: false, transport });
try {
  const idle = await measure(() => new Promise((r) => setTimeout(r, seconds * 1000)));
  const script = `end=$(($(date +%s)+${seconds})); n=0; ` +
    `while [ $(date +%s) -lt $end ]; do for i in 1 2 3 4 5 6 7 8 9 10; do cat ${mnt}/hello >/dev/null; done; n=$((n+10)); done; echo $n`;
  let cycles = 0;
  const count = () => session.counters.dev.requests + (session.counters.uring?.requests ?? 0);
  const before = count();
  const busy = await measure(async () => {
    const outs = await Promise.all(
      [1, 2].map(() => new Deno.Command("sh", { args: ["-c", script] }).output()),
    );
    cycles = outs.reduce((n, o) => n + Number(new TextDecoder().decode(o.stdout)), 0);
  });
  const requests = count() - before;
  console.log(`transport: ${session.transport}`);
  console.log(`idle: worst gap ${idle.worst.toFixed(2)} ms over ${idle.ticks} ticks`);
  console.log(
    `load: worst gap ${busy.worst.toFixed(2)} ms over ${busy.ticks} ticks; ` +
      `${cycles} cat runs, ${requests} requests (${(requests / seconds).toFixed(0)}/s)`,
  );
} finally {
  await session.unmount();
  await Deno.remove(mnt);
}
