export type { SharedState, SharedStatus, StartLock, Store, VmRecord } from "./contract.js";
export { MemoryStore } from "./memory.js";
export { SqliteStore, type SqliteStoreOptions } from "./sqlite.js";
export { EtcdStore, type EtcdSettings } from "./etcd.js";
