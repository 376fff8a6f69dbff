/**
 * The entry point node:cluster forks for each DNS worker (--workers N); the
 * primary names this file in cluster.setupPrimary({ exec }). See worker.ts.
 */
import "../runtime/heap.js";
import { runWorker } from "./worker.js";

runWorker();
