/**
 * The library's queue Worker (bundled into `gen/` by `deno task
 * bundle`): serves READ and WRITE of fd-backed handles on its queues and
 * hands every other request to the FileSystem on the session's thread.
 *
 * @module
 */

import { serveQueueThread } from "./queue_thread.ts";

serveQueueThread();
