import type { Store, VmRecord } from "./contract.js";

/** The default store: state lives as long as the process. */
export class MemoryStore implements Store {
  private readonly records = new Map<string, VmRecord>();

  async load(): Promise<VmRecord[]> {
    return [...this.records.values()];
  }

  async write(records: readonly VmRecord[]): Promise<void> {
    for (const r of records) this.records.set(r.label, r);
  }

  async close(): Promise<void> {}
}
