/**
 * Readiness (DESIGN.md "Summoner"): what a VM must pass after the backend's
 * start, resume or unpause returned and before its address is given out, in
 * order: wait_for_key, the response delay, the ready= probes, and an address
 * when none is configured. Every wait is on the injected clock and ends as soon
 * as the start's signal aborts (its timeout, or the VM exiting meanwhile).
 */
import { setMaxListeners } from "node:events";
import type { VmBackend } from "../backends/contract.js";
import type { Clock } from "../clock/index.js";
import { BackendError } from "../errors/index.js";
import type { ReadyProbe } from "../config/index.js";
import { describeProbe, PROBE_ATTEMPT_TIMEOUT_MS, probeAttempt } from "./probes.js";
import { sameList, type Vm } from "./vm.js";

/** How often the probe loop looks: a new attempt when none is in flight (the retry after a failed one). */
const PROBE_RETRY_MS = 50;
/**
 * The same after an attempt that was refused (nothing listens yet): such an
 * attempt costs the guest a reset from its kernel and its service nothing,
 * and the retry is most of what a hold port's first connection waits beyond
 * the VM's own boot (bench: 17-59 ms with 50 ms).
 */
const PROBE_RETRY_REFUSED_MS = 10;
/** An attempt still waiting after this long gets another one beside it (see untilPasses). */
const PROBE_HEDGE_MS = 250;
/** At most this many attempts of one probe at once: as many hedges as fit into one attempt's timeout. */
const PROBE_IN_FLIGHT_MAX = Math.ceil(PROBE_ATTEMPT_TIMEOUT_MS / PROBE_HEDGE_MS);
const ADDRESS_RETRY_MS = 250;

export interface ReadinessOptions {
  readonly backend: VmBackend;
  readonly clock: Clock;
  /** -d: the response delay of VMs without their own `response_delay`, in seconds. */
  readonly delaySeconds: number;
}

/** What the start is waiting for, for the timeout's message ("still waiting for tcp:8000"). */
export interface StartStep {
  name: string;
}

/**
 * Resolves when `vm` is ready; `adopted` (found running, not started by us)
 * skips the response delay. Rejects with the signal's reason when it aborts.
 */
export async function waitReady(
  vm: Vm,
  opts: ReadinessOptions,
  signal: AbortSignal,
  step: StartStep,
  adopted: boolean,
): Promise<void> {
  const { backend, clock } = opts;
  const spec = vm.spec;
  if (spec.waitForKey !== undefined && backend.waitForKey !== undefined) {
    // Names the backend: a hung xenstored shows up here, not in the backend's start call.
    step.name = `waiting for key '${spec.waitForKey}' in the ${backend.name} backend's xenstore`;
    const waiting = backend.waitForKey(vm.ref, spec.waitForKey, signal);
    try {
      await abortable(waiting, signal);
    } catch (err) {
      // At the timeout the backend may know better than "still waiting": xenstored left its
      // request unanswered (hung). Its error, a daemon fault, then goes up in place of the
      // timeout's, so that the VM is not blamed (src/xen/xenstore/domain-key.ts).
      if (signal.aborted) {
        const own = await settledAtOnce(waiting);
        if (own instanceof BackendError && own.unavailable) throw own;
      }
      throw err;
    }
  }
  const delay = spec.responseDelay ?? opts.delaySeconds;
  if (!adopted && delay > 0) {
    step.name = `in its response delay of ${delay} s`;
    await clock.sleep(delay * 1000, signal);
  }
  for (const probe of spec.ready) {
    step.name = `waiting for ${describeProbe(probe)}`;
    await untilPasses(probe, clock, signal);
  }
  if (spec.ips.length === 0 && backend.addresses !== undefined) {
    step.name = "waiting for an address";
    for (;;) {
      const found = await abortable(backend.addresses(vm.ref), signal);
      if (found.length > 0) {
        if (!sameList(found, vm.addresses)) vm.addresses = Object.freeze([...found]);
        return;
      }
      await clock.sleep(ADDRESS_RETRY_MS, signal);
    }
  }
}

/**
 * Resolves when an attempt of `probe` passes; rejects with the signal's reason
 * when it aborts first. One attempt at a time, a new one PROBE_RETRY_MS after
 * the last ended (PROBE_RETRY_REFUSED_MS when it was refused); but an attempt still waiting after PROBE_HEDGE_MS gets
 * another beside it (up to PROBE_IN_FLIGHT_MAX). A connection opened before
 * a guest's network is up can hang until its timeout: QEMU's user networking
 * accepts the hostfwd connection and queues the guest's SYN until the
 * guest's NIC answers ARP, then drops it after about a second (a bridged
 * guest's address without an ARP answer does the same). One attempt at a
 * time then noticed a service that came up meanwhile only at that attempt's
 * end, up to PROBE_ATTEMPT_TIMEOUT_MS late; with a young attempt always in
 * flight, the network coming up ends it (refused or answered) at once. Not
 * more: each attempt that reaches the guest is a request it must serve while
 * it boots. Whichever attempt passes first ends the others.
 */
async function untilPasses(probe: ReadyProbe, clock: Clock, signal: AbortSignal): Promise<void> {
  /** Aborted when one attempt passed or `signal` aborted: ends the sleep and every attempt in flight. */
  const stop = new AbortController();
  // Each attempt in flight listens to it, and the sleep.
  setMaxListeners(PROBE_IN_FLIGHT_MAX + 2, stop.signal);
  const onAbort = (): void => stop.abort(signal.reason);
  signal.addEventListener("abort", onAbort, { once: true });
  let passed = false;
  let inFlight = 0;
  let lastStart = -Infinity;
  /** Set by each attempt's outcome; the first attempt's is not known before the first sleep. */
  let retryMs = PROBE_RETRY_REFUSED_MS;
  try {
    for (;;) {
      if (signal.aborted) throw signal.reason as Error;
      const now = clock.now();
      if (inFlight === 0 || (inFlight < PROBE_IN_FLIGHT_MAX && now - lastStart >= PROBE_HEDGE_MS)) {
        inFlight++;
        lastStart = now;
        void probeAttempt(probe, PROBE_ATTEMPT_TIMEOUT_MS, stop.signal).then((outcome) => {
          inFlight--;
          retryMs = outcome === "refused" ? PROBE_RETRY_REFUSED_MS : PROBE_RETRY_MS;
          if (outcome === "passed" && !stop.signal.aborted) {
            passed = true;
            stop.abort();
          }
        });
      }
      try {
        await clock.sleep(retryMs, stop.signal);
      } catch (err) {
        if (passed) return;
        throw err;
      }
    }
  } finally {
    signal.removeEventListener("abort", onAbort);
    stop.abort();
  }
}

/**
 * What `p` rejected with if it settles within the current turn of the event
 * loop (its promise jobs, which an abort listener's rejection goes through), else
 * undefined.
 */
async function settledAtOnce(p: Promise<unknown>): Promise<unknown> {
  return Promise.race([
    p.then(
      () => undefined,
      (err: unknown) => err,
    ),
    new Promise<undefined>((resolve) => setImmediate(() => resolve(undefined))),
  ]);
}

/** `p`, or the signal's reason if it aborts first. */
export function abortable<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    p.catch(() => undefined);
    return Promise.reject(signal.reason as Error);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error);
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}
