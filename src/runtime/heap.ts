/**
 * V8 heap tuning for the jitsu processes, imported first by both entry points,
 * cli/main.ts and cluster/worker-main.ts (so before the other modules run;
 * tests that start jitsu in-process do not get it).
 *
 * V8 doubles the young generation, up to two semi-spaces of 16 MB, whenever
 * enough objects survive its scavenges. Start-up with many VMs builds only
 * long-lived objects, so the young generation reached its maximum and stayed
 * there: with 10,000 VMs, ~25 MB of the 120 MB RSS (bench/), in a server whose
 * hot path allocates little more than its reply. A growth factor of 1 keeps
 * the semi-spaces at their initial size: peak RSS with 10,000 VMs 121 -> 95 MB
 * (since lower still, with fewer objects per VM); CPU per query on the hot
 * path and forwarding unchanged in dnsperf A/B runs; start-up does ~45 small
 * scavenges instead of ~15 larger ones (~50 ms more of GC with 10,000 VMs, for
 * ~25 MB less). `--max-semi-space-size` would do the
 * same but is read only from node's own command line; the growth factor is
 * read at each growth, so setting it here takes effect.
 *
 * A semi-space flag given to node (node --max-semi-space-size=16 main.js, or
 * in NODE_OPTIONS) is the user's choice and left alone.
 */
import { setFlagsFromString } from "node:v8";

const given = [...process.execArgv, process.env.NODE_OPTIONS ?? ""].some((a) => /semi[-_]space/.test(a));
if (!given) setFlagsFromString("--semi-space-growth-factor=1");
