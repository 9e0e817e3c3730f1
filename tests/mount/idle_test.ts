// An idle mount costs nothing: once its clients are gone, a server waits in
// the kernel (poll on /dev/fuse, io_uring_enter on its rings, with no
// timeout), so over a minute its threads are hardly scheduled and it uses
// no measurable CPU. Measured from /proc, as an administrator would.
import assert from "node:assert/strict";
import { readSmallFile } from "../../ffi/libc.ts";
import { sh, uringTest, withPassthrough } from "../helpers.ts";

/** How long the mount is watched while idle. */
const IDLE_MS = 60_000;
/** How long a server is left alone before it is watched. */
const SETTLE_MS = 40_000;
/** Serving threads asked for: the session's thread and one more. */
const THREADS = 2;

/** Context switches (voluntary and not) of each thread of `pid` now, by thread id. */
function switchesByThread(pid: number): Map<number, number> {
  const out = new Map<number, number>();
  let tids: number[];
  try {
    tids = [...Deno.readDirSync(`/proc/${pid}/task`)].map((e) => Number(e.name));
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const status = readSmallFile(`/proc/${pid}/task/${tid}/status`);
      let n = 0;
      for (const m of status.matchAll(/^(?:non)?voluntary_ctxt_switches:\s+(\d+)$/gm)) {
        n += Number(m[1]);
      }
      out.set(tid, n);
    } catch { /* the thread ended meanwhile */ }
  }
  return out;
}

/** CPU time of the whole process so far (ended threads included), in clock ticks. */
function cpuTicks(pid: number): number {
  // The fields after the command name (which may hold spaces): utime is the 12th.
  const stat = readSmallFile(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

/**
 * Watch `pid` for `ms`: its threads' wake-ups (switches, sampled every 250 ms
 * so threads that start or end meanwhile are counted), and its CPU time.
 */
async function watchIdle(pid: number, ms: number) {
  const first = switchesByThread(pid);
  const last = new Map(first);
  const cpu0 = cpuTicks(pid);
  const t0 = performance.now();
  while (performance.now() - t0 < ms) {
    await new Promise((r) => setTimeout(r, 250));
    for (const [tid, n] of switchesByThread(pid)) last.set(tid, n);
  }
  const seconds = (performance.now() - t0) / 1000;
  const cpuSeconds = (cpuTicks(pid) - cpu0) / 100; // USER_HZ is 100 on Linux
  const perThread: Record<string, number> = {};
  let wakeUps = 0;
  for (const [tid, n] of last) {
    const woke = n - (first.get(tid) ?? 0);
    wakeUps += woke;
    if (woke > 0) perThread[readName(pid, tid)] = (perThread[readName(pid, tid)] ?? 0) + woke;
  }
  return { seconds, wakeUps, cpuSeconds, perThread };
}

function readName(pid: number, tid: number): string {
  try {
    return readSmallFile(`/proc/${pid}/task/${tid}/comm`).trim();
  } catch {
    return "(ended)";
  }
}

// Both transports at once (separate servers), to spend the idle minute once.
uringTest(
  "idle: a mounted, idle server wakes at most once a second per thread and uses no CPU",
  () =>
    withPassthrough(
      "dev",
      (devMnt, devSrc, devPid) =>
        withPassthrough("io_uring", async (uringMnt, uringSrc, uringPid) => {
          const servers = [
            { transport: "dev", mnt: devMnt, src: devSrc, pid: devPid },
            { transport: "io_uring", mnt: uringMnt, src: uringSrc, pid: uringPid },
          ];
          // Serve a little first, so every thread and ring has started.
          for (const { mnt, src } of servers) {
            await Deno.writeTextFile(`${mnt}/f`, "some data\n");
            assert.equal(await sh(`cat ${mnt}/f && ls ${mnt}`), "some data\nf\n");
            assert.equal(await Deno.readTextFile(`${src}/f`), "some data\n");
          }
          // V8 collects garbage in a few bursts once a thread goes quiet (its
          // memory reducer, which gives memory back): idle is what follows.
          await new Promise((r) => setTimeout(r, SETTLE_MS));
          const watched = await Promise.all(servers.map(({ pid }) => watchIdle(pid, IDLE_MS)));
          for (const [i, idle] of watched.entries()) {
            const summary = `${servers[i].transport}: ${idle.wakeUps} wake-ups in ` +
              `${idle.seconds.toFixed(1)} s (${JSON.stringify(idle.perThread)}), ` +
              `${idle.cpuSeconds.toFixed(2)} s of CPU`;
            console.log(summary);
            assert.ok(idle.wakeUps <= idle.seconds * THREADS, summary);
            assert.ok(idle.cpuSeconds <= idle.seconds * 0.001, summary);
          }
          // Still serving after the idle minute.
          for (const { mnt } of servers) {
            assert.equal(await Deno.readTextFile(`${mnt}/f`), "some data\n");
          }
        }, ["-o", `threads=${THREADS}`]),
      ["-o", `threads=${THREADS}`],
    ),
  SETTLE_MS + IDLE_MS + 60_000,
);
