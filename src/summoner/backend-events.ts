/**
 * Changes the backend noticed by itself (a libvirt lifecycle event, QMP
 * SHUTDOWN, a process exit): applied to the VM's phase at once, so a VM
 * stopped or paused behind our back is seen before the next reaper pass, and
 * a VM that exits while it starts fails that start at once instead of at its
 * timeout. A VM started behind our back is adopted as a request would adopt
 * it (the centre's flight: its readiness checks pass before it is answered).
 */
import type { BackendEvent } from "../backends/contract.js";
import type { Clock } from "../clock/index.js";
import { BackendError } from "../errors/index.js";
import type { Logger } from "../log/index.js";
import { PAUSED, SUSPENDED, phaseFor, type Phase, type Vm } from "./vm.js";

/** What applying an event needs from the summoner. */
export interface EventHost {
  readonly backendName: string;
  readonly clock: Clock;
  readonly log: Logger;
  setPhase(vm: Vm, phase: Phase): void;
  /**
   * Begins the adoption of `vm`, found running by the backend: the same
   * flight as a request's adoption (a state re-read, then wait_for_key, the
   * ready= probes and an address), joined by the requests that arrive
   * meanwhile; not counted as a start or a request.
   */
  adopt(vm: Vm): void;
}

export function applyBackendEvent(host: EventHost, vm: Vm, event: BackendEvent): void {
  const label = vm.spec.label;
  const reason = event.reason === undefined ? "" : ` (${event.reason})`;
  const phase = vm.phase;
  if (phase.kind === "stopping") return;
  if (phase.kind === "starting") {
    if (event.state === "off" || event.state === "crashed") {
      phase.abort.abort(new BackendError(host.backendName, `stopped while starting${reason}`, { vm: label }));
    }
    return;
  }
  switch (event.state) {
    case "off":
    case "crashed":
      if (phase.kind === "off") return;
      if (phase.kind === "failed") {
        // A failed start that left the VM running has ended now: it no longer counts as up
        // (--max-running), and its back-off stays.
        if (phase.runs === "maybe") host.setPhase(vm, { ...phase, runs: "no" });
        return;
      }
      host.log.warn(
        { type: event.state === "crashed" ? "vm.failed" : "vm.stopped" },
        `VM '${label}' is ${event.state}${reason}`,
      );
      if (event.state === "crashed") vm.lastError = `crashed${reason}`;
      host.setPhase(vm, phaseFor(event.state, host.clock.now()));
      return;
    case "running":
      if (phase.kind === "ready" || vm.flight !== null) return;
      // Not ready at once: its service may not be up yet (ready= probes, wait_for_key).
      host.log.info(`VM '${label}' was started behind our back; adopting it`);
      host.adopt(vm);
      return;
    case "paused":
    case "suspended":
      if (phase.kind === event.state || vm.flight !== null) return;
      host.log.info(
        { type: phase.kind === "ready" ? "vm.stopped" : "vm.state" },
        `VM '${label}' is ${event.state}${reason}`,
      );
      host.setPhase(vm, event.state === "paused" ? PAUSED : SUSPENDED);
      return;
    case "unknown":
      return;
  }
}
