export type { Store, VmRecord } from "./contract.js";
export { MemoryStore } from "./memory.js";
export { SqliteStore, StoreError, type SqliteStoreOptions } from "./sqlite.js";
