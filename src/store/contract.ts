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

/** A start lock held in the shared store (SharedState.lockStart). */
export interface StartLock {
  /** Lets the other instances go on; never rejects. */
  release(): Promise<void>;
}

/**
 * What several jitsu instances share beside their records (`--etcd`, EtcdStore):
 * the summoner's shared part (src/summoner/shared.ts) uses it before a start,
 * in the reaper's idle test and to decide whether this instance stops VMs.
 */
export interface SharedState {
  /** Whether this instance can see the others now (etcd answers, the watch runs). */
  connected(): boolean;
  /** The latest last request of `label` over every instance, as last published (ms), or null. */
  lastRequest(label: string): number | null;
  /** Whether this instance is the elected reaper now (and connected). */
  isReaper(): boolean;
  /**
   * Holds `label`'s start lock (resolves with it), or resolves with null when
   * another instance's start made the VM ready meanwhile. Rejects with the
   * signal's reason when it aborts.
   */
  lockStart(label: string, signal: AbortSignal): Promise<StartLock | null>;
  /** Called when another instance changed a VM's state. */
  onRemoteState(listener: (label: string, state: string) => void): void;
  /** Where the state is shared and how that stands now (/status "shared", the jitsu_etcd_* gauges). */
  describe(): SharedStatus;
}

/** /status "shared": the state shared with the other instances (--etcd). */
export interface SharedStatus {
  readonly store: "etcd";
  readonly endpoints: readonly string[];
  readonly prefix: string;
  /** This instance's name in etcd (host:pid:random). */
  readonly instance: string;
  /** Whether this instance sees the others now (etcd answered within 3 s and the watch runs). */
  readonly connected: boolean;
  /** Whether this instance is the elected reaper (the one that stops idle VMs) now. */
  readonly reaper: boolean;
  /** When etcd last answered (ms since the epoch). */
  readonly lastAnswer: number;
}
