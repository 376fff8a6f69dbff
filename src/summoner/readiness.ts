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
import type { ReadyProbe } from "../config/index.js";
import { describeProbe, PROBE_ATTEMPT_TIMEOUT_MS, probeOnce } from "./probes.js";
import { sameList, type Vm } from "./vm.js";

/** A new probe attempt this often, whether the earlier ones have ended or not (see untilPasses). */
const PROBE_RETRY_MS = 50;
/** At most this many attempts of one probe at once: as many as the interval fits into one attempt's timeout. */
const PROBE_IN_FLIGHT_MAX = Math.ceil(PROBE_ATTEMPT_TIMEOUT_MS / PROBE_RETRY_MS);
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
    step.name = `waiting for key '${spec.waitForKey}'`;
    await abortable(backend.waitForKey(vm.ref, spec.waitForKey, signal), signal);
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
 * when it aborts first. A new attempt starts every PROBE_RETRY_MS even while
 * earlier ones still wait: a connection to an address that is not up yet
 * can hang until its timeout (a SYN nobody answers: QEMU's user networking
 * holds a hostfwd connection while the guest's NIC is not up, a bridged
 * guest's address has no ARP answer yet), and one attempt at a time would
 * then notice a service that came up meanwhile only at that attempt's end,
 * up to PROBE_ATTEMPT_TIMEOUT_MS late (bench/qemu-lifecycle.ts, cold boot).
 * Whichever attempt passes first ends the others.
 */
async function untilPasses(probe: ReadyProbe, clock: Clock, signal: AbortSignal): Promise<void> {
  /** Aborted when one attempt passed or `signal` aborted: ends the sleep and every attempt in flight. */
  const stop = new AbortController();
  // Each attempt in flight listens to it (and the sleep): more than Node's default warning level of 10.
  setMaxListeners(PROBE_IN_FLIGHT_MAX + 2, stop.signal);
  const onAbort = (): void => stop.abort(signal.reason);
  signal.addEventListener("abort", onAbort, { once: true });
  let passed = false;
  let inFlight = 0;
  try {
    for (;;) {
      if (signal.aborted) throw signal.reason as Error;
      if (inFlight < PROBE_IN_FLIGHT_MAX) {
        inFlight++;
        void probeOnce(probe, PROBE_ATTEMPT_TIMEOUT_MS, stop.signal).then((ok) => {
          inFlight--;
          if (ok && !stop.signal.aborted) {
            passed = true;
            stop.abort();
          }
        });
      }
      try {
        await clock.sleep(PROBE_RETRY_MS, stop.signal);
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
