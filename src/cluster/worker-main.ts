/**
 * The entry point node:cluster forks for each DNS worker (--workers N); the
 * primary names this file in cluster.setupPrimary({ exec }). See worker.ts.
 */
import "../runtime/heap.js";
import { runWorker } from "./worker.js";

// Not "jitsu": `kill -HUP $(pidof jitsu)` is for the primary (workers ignore signals anyway).
process.title = "jitsu-worker";
runWorker();
