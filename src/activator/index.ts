export {
  Activator,
  HOLD_BUCKETS,
  type ActivatorHost,
  type ActivatorOptions,
  type HoldListenerStatus,
  type HoldStatus,
  type SummonAccess,
} from "./activator.js";
export { holdPlan, zoneVms, endpointText, type HoldPlan, type HoldVm } from "./plan.js";
export { relay, type RelayResult } from "./relay.js";
