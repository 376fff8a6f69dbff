export { parseConfigString, parseTuple, type ConfigPair } from "./grammar.js";
export { VmOptions, validate, checkValue, closest, type KeySpec, type KeyType } from "./keys.js";
export {
  COMMON_KEYS,
  buildVmSpec,
  distinctVms,
  samePairs,
  parseReadyProbe,
  parseHoldPort,
  type HoldPort,
  type VmSpec,
  type ReadyProbe,
  type BuildSpecOptions,
} from "./spec.js";
export * from "./values.js";
export {
  readConfigFile,
  parseConfigText,
  buildFileSpecs,
  mergeOptions,
  type ConfigFile,
  type ConfigFileVm,
  type FileOptionSpec,
} from "./file.js";
export { groupPlans, type GroupPlan, type GroupCheckOptions } from "./groups.js";
