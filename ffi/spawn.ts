/**
 * Running a helper program (fusermount3) with `posix_spawnp(3)`: no Deno
 * `--allow-run` permission beyond the FFI the server already has, an fd
 * handed to the child at a fixed number, and the child's stderr captured so
 * that its complaint can go into our error message.
 *
 * @module
 */

import { Errno, SystemError } from "./errno.ts";
import { addressOf, check, close, cstr, errno, libc, O, setFdFlags } from "./libc.ts";

/** How a child ended, and what it wrote to stderr. */
export interface ChildExit {
  /** Its exit status, or null if a signal ended it. */
  code: number | null;
  /** The signal that ended it, or null. */
  signal: number | null;
  /** Its stderr, trimmed. */
  stderr: string;
}

const WNOHANG = 1;
// glibc's posix_spawn_file_actions_t is 80 bytes on 64-bit Linux; room to spare.
const FILE_ACTIONS_SIZE = 128;

/** A child process started by {@linkcode ChildProcess.spawn}. */
export class ChildProcess {
  /** Its process id. */
  readonly pid: number;
  readonly #stderr: number;
  #text = "";
  readonly #decoder = new TextDecoder();
  #exit: ChildExit | null = null;

  private constructor(pid: number, stderr: number) {
    this.pid = pid;
    this.#stderr = stderr;
  }

  /**
   * Start `program` (looked up in PATH) with `args` and exactly the
   * environment `env` ("NAME=value" strings). `passFd`, if given, is
   * duplicated to fd 3 in the child (our fds are close-on-exec, so it is
   * the only one it inherits besides stdin and stdout). Throws a
   * {@linkcode SystemError} (ENOENT when the program is not installed).
   */
  static spawn(program: string, args: string[], env: string[], passFd?: number): ChildProcess {
    const pipe = new Int32Array(2);
    check(libc.pipe2(new Uint8Array(pipe.buffer), O.CLOEXEC), "pipe2");
    const [readEnd, writeEnd] = pipe;
    setFdFlags(readEnd, O.NONBLOCK);
    const actions = new Uint8Array(FILE_ACTIONS_SIZE);
    libc.posix_spawn_file_actions_init(actions);
    try {
      // dup2 onto a new number clears close-on-exec there.
      libc.posix_spawn_file_actions_adddup2(actions, writeEnd, 2);
      if (passFd !== undefined) libc.posix_spawn_file_actions_adddup2(actions, passFd, 3);
      const strings = [program, ...args].map((s) => cstr(s));
      const envStrings = env.map((s) => cstr(s));
      const pointers = (list: Uint8Array[]) => {
        const array = new BigUint64Array(list.length + 1);
        list.forEach((s, i) => array[i] = addressOf(s));
        return new Uint8Array(array.buffer);
      };
      const pid = new Int32Array(1);
      // posix_spawnp returns the error number rather than setting errno.
      const err = libc.posix_spawnp(
        new Uint8Array(pid.buffer),
        strings[0],
        actions,
        null,
        pointers(strings),
        pointers(envStrings),
      );
      if (err !== 0) {
        close(readEnd);
        throw new SystemError("posix_spawnp", err, program);
      }
      return new ChildProcess(pid[0], readEnd);
    } finally {
      libc.posix_spawn_file_actions_destroy(actions);
      close(writeEnd);
    }
  }

  /** How the child ended, or null while it runs (never blocks). */
  exited(): ChildExit | null {
    return this.#reap(WNOHANG) ? this.#exit : null;
  }

  /**
   * Wait for the child to end, without blocking this thread (it polls every
   * few ms); null if it still runs after `timeoutMs`.
   */
  async wait(timeoutMs = Infinity): Promise<ChildExit | null> {
    const deadline = Date.now() + timeoutMs;
    for (let delay = 1; !this.#reap(WNOHANG); delay = Math.min(delay * 2, 20)) {
      if (Date.now() >= deadline) return null;
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
    return this.#exit;
  }

  /** End the child with SIGKILL and reap it (if it still runs). */
  kill(): void {
    if (this.#exit) return;
    libc.kill(this.pid, 9);
    this.waitSync();
  }

  /** Wait for the child to end, blocking this thread. */
  waitSync(): ChildExit {
    while (!this.#reap(0)) { /* EINTR: wait again */ }
    return this.#exit!;
  }

  /** Reap the child if it has ended; true once it has. */
  #reap(options: number): boolean {
    if (this.#exit) return true;
    this.#readStderr();
    const status = new Int32Array(1);
    const pid = libc.waitpid(this.pid, new Uint8Array(status.buffer), options);
    if (pid === 0) return false;
    if (pid < 0) {
      const e = errno();
      if (e === Errno.EINTR) return false;
      close(this.#stderr);
      throw new SystemError("waitpid", e, `pid ${this.pid}`);
    }
    const s = status[0];
    const signal = s & 0x7f;
    this.#exit = {
      code: signal === 0 ? (s >> 8) & 0xff : null,
      signal: signal === 0 ? null : signal,
      stderr: this.#readStderr(true),
    };
    return true;
  }

  /**
   * Collect what the child has written to stderr so far (so that it never
   * blocks on a full pipe); once it has exited, all of it, trimmed.
   */
  #readStderr(last = false): string {
    const chunk = new Uint8Array(4096);
    const ptr = Deno.UnsafePointer.of(chunk);
    for (;;) {
      const n = libc.read(this.#stderr, ptr, BigInt(chunk.length));
      if (n <= 0) break;
      this.#text += this.#decoder.decode(chunk.subarray(0, n), { stream: true });
    }
    if (!last) return "";
    close(this.#stderr);
    return (this.#text + this.#decoder.decode()).trim();
  }
}
