export type { Store, VmRecord } from "./contract.js";
export { MemoryStore } from "./memory.js";
export { SqliteStore, type SqliteStoreOptions } from "./sqlite.js";
