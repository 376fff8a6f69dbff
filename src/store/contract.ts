/**
 * The Store contract (DESIGN.md "Store"): what outlives a query. The summoner
 * writes behind the hot path (on reaper ticks and at shutdown) and reads back at
 * start-up.
 */
export interface VmRecord {
  /** The VM's label (name, else uuid, else first DNS name): the key. */
  readonly label: string;
  readonly names: readonly string[];
  readonly ips: readonly string[];
  /** The backend's reference (VmRef.ref) and the backend's name. */
  readonly backend: string;
  readonly backendRef: string;
  /** The summoner's state name (off, starting, ready, stopping, suspended, paused, failed). */
  readonly state: string;
  /** ms since the epoch, or null. */
  readonly startedAt: number | null;
  readonly totalStarts: number;
  readonly totalRequests: number;
  readonly lastRequest: number | null;
  readonly stopMode: string;
}

export interface Store {
  load(): Promise<VmRecord[]>;
  /** Replaces the records of the given VMs (others are kept). */
  write(records: readonly VmRecord[]): Promise<void>;
  close(): Promise<void>;
}
