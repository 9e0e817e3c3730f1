// The test kit's MemoryExchange with fd data faked, and request builders,
// for dispatcher tests that need no kernel and no backing files.
import { InHeader, InitFlag, InitIn, Opcode } from "../ops/abi.ts";
import { setU64 } from "../ops/codec.ts";
import type { Dispatcher } from "../ops/dispatch.ts";
import { MemoryExchange, type TestReply } from "../testing.ts";

/** A reply the fake transport received. */
export type Reply = TestReply;

/** An exchange whose fd reads and writes are faked: reads give "F"s, writes take everything. */
export class FakeExchange extends MemoryExchange {
  override replyFromFd(unique: number, _fd: number, _offset: number, length: number): void {
    this.outBytes.fill(0x46, 0, length); // "F": as if read from the fd
    this.reply(unique, 0, length);
  }

  override writeDataToFd(_fd: number, _offset: number, _killSuidgid: boolean): number {
    return this.dataLength;
  }
}

const encoder = new TextEncoder();
let nextUnique = 2;

/** Build a request: header, fixed argument, then NUL-terminated names / raw data. */
export function request(
  opcode: number,
  nodeId: number,
  arg: Uint8Array = new Uint8Array(0),
  ...data: (string | Uint8Array)[]
): { bytes: Uint8Array; unique: number } {
  const parts = data.map((d) => typeof d === "string" ? encoder.encode(d + "\0") : d);
  const len = InHeader.SIZE + arg.length + parts.reduce((n, p) => n + p.length, 0);
  const bytes = new Uint8Array(len);
  const v = new DataView(bytes.buffer);
  const unique = nextUnique += 2;
  v.setUint32(InHeader.len, len, true);
  v.setUint32(InHeader.opcode, opcode, true);
  setU64(v, InHeader.unique, unique);
  setU64(v, InHeader.nodeid, nodeId);
  v.setUint32(InHeader.uid, 1000, true);
  v.setUint32(InHeader.gid, 100, true);
  v.setUint32(InHeader.pid, 4242, true);
  bytes.set(arg, InHeader.SIZE);
  let at = InHeader.SIZE + arg.length;
  for (const p of parts) {
    bytes.set(p, at);
    at += p.length;
  }
  return { bytes, unique };
}

/** A fixed argument of `size` bytes filled in by `fill`. */
export function arg(size: number, fill: (v: DataView) => void = () => {}): Uint8Array {
  const a = new Uint8Array(size);
  fill(new DataView(a.buffer));
  return a;
}

/** Dispatch a request and wait for its reply (or release). */
export async function roundTrip(
  d: Dispatcher,
  req: { bytes: Uint8Array },
  outCapacity?: number,
): Promise<FakeExchange> {
  const opcode = new DataView(req.bytes.buffer).getUint32(InHeader.opcode, true);
  const ex = new FakeExchange(
    req.bytes,
    opcode === Opcode.INIT ? req.bytes.length - InHeader.SIZE : d.argSize(opcode),
    outCapacity,
  );
  d.dispatch(ex);
  await ex.done;
  return ex;
}

/** Send the kernel's INIT for protocol 7.45 and wait for the reply. */
export function init(d: Dispatcher): Promise<FakeExchange> {
  const flags = InitFlag.ASYNC_READ | InitFlag.BIG_WRITES | InitFlag.MAX_PAGES |
    InitFlag.INIT_EXT | InitFlag.DO_READDIRPLUS;
  return roundTrip(
    d,
    request(
      Opcode.INIT,
      0,
      arg(InitIn.SIZE, (v) => {
        v.setUint32(InitIn.major, 7, true);
        v.setUint32(InitIn.minor, 45, true);
        v.setUint32(InitIn.max_readahead, 131072, true);
        v.setUint32(InitIn.flags, Number(flags & 0xffffffffn), true);
        v.setUint32(InitIn.flags2, Number(flags >> 32n), true);
      }),
    ),
  );
}
