export type { Store, VmRecord } from "./contract.js";
export { MemoryStore } from "./memory.js";
