/**
 * Readiness (DESIGN.md "Summoner"): what a VM must pass after the backend's
 * start, resume or unpause returned and before its address is given out, in
 * order: wait_for_key, the response delay, the ready= probes, and an address
 * when none is configured. Every wait is on the injected clock and ends as soon
 * as the start's signal aborts (its timeout, or the VM exiting meanwhile).
 */
import type { VmBackend } from "../backends/contract.js";
import type { Clock } from "../clock/index.js";
import { describeProbe, probeOnce } from "./probes.js";
import { sameList, type Vm } from "./vm.js";

const PROBE_RETRY_MS = 50;
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
    while (!(await abortable(probeOnce(probe), signal))) await clock.sleep(PROBE_RETRY_MS, signal);
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
