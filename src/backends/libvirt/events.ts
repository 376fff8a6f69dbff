/**
 * Lifecycle events (libvirt-domain.h virDomainEventType and its detail enums)
 * turned into our VmState.
 */
import type { VmState } from "../contract.js";
import { DomainEvent, STOPPED_SAVED } from "./protocol.js";

const EVENT_NAMES = [
  "defined",
  "undefined",
  "started",
  "suspended",
  "resumed",
  "stopped",
  "shutdown",
  "pmsuspended",
  "crashed",
];

/** virDomainEvent*DetailType, for the events whose detail says something to a user. */
const DETAILS: Record<number, readonly string[]> = {
  [DomainEvent.Started]: ["booted", "migrated", "restored", "from snapshot", "wakeup"],
  [DomainEvent.Suspended]: [
    "paused",
    "migrated",
    "I/O error",
    "watchdog",
    "restored",
    "from snapshot",
    "API error",
    "postcopy",
    "postcopy failed",
  ],
  [DomainEvent.Resumed]: ["unpaused", "migrated", "from snapshot", "postcopy", "postcopy failed"],
  [DomainEvent.Stopped]: ["shutdown", "destroyed", "crashed", "migrated", "saved", "failed", "from snapshot"],
  [DomainEvent.Shutdown]: ["finished", "guest", "host"],
  [DomainEvent.Crashed]: ["panicked", "crashloaded"],
};

export function describeEvent(event: number, detail: number): string {
  const name = EVENT_NAMES[event] ?? `event ${event}`;
  const d = DETAILS[event]?.[detail];
  return d === undefined ? name : `${name} (${d})`;
}

/**
 * The state a lifecycle event leaves the domain in, or undefined when the
 * event does not change it (defined, shutdown requested). A domain stopped
 * with detail "saved" is suspended only if a managed save image exists
 * (`virsh save FILE` also says "saved" but leaves nothing to restore).
 */
export async function eventState(
  event: number,
  detail: number,
  hasManagedSave: () => Promise<boolean>,
): Promise<VmState | undefined> {
  switch (event) {
    case DomainEvent.Started:
    case DomainEvent.Resumed:
      return "running";
    case DomainEvent.Suspended:
      return "paused";
    case DomainEvent.Stopped:
      if (detail === STOPPED_SAVED) return (await hasManagedSave()) ? "suspended" : "off";
      return "off";
    case DomainEvent.PmSuspended:
      return "suspended";
    case DomainEvent.Crashed:
      return "crashed";
    case DomainEvent.Undefined:
      return "unknown";
    default:
      return undefined;
  }
}
