/** The event stream every part reports to (see README.md). */
export { EVENTS_KEPT, EventBus, type EventListener } from "./bus.js";
export {
  NOT_LOGGED,
  type EventFields,
  type EventInput,
  type EventType,
  type EventVmState,
  type JitsuEvent,
  type StatsFields,
  type StopReason,
} from "./types.js";
