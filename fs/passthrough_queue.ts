/**
 * The passthrough in a queue thread (bundled into `gen/` by `deno task
 * bundle`): an instance over the session's shared inode table answers every
 * request of the thread's queues on the queue's own CPU.
 *
 * @module
 */

import { serveQueueThread } from "../server/queue_thread.ts";
import { Passthrough, type PassthroughShared } from "./passthrough.ts";

serveQueueThread((data) => new Passthrough("", data as PassthroughShared));
