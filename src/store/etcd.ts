/**
 * EtcdStore: the Store contract kept in etcd (`--etcd ENDPOINTS`), shared by
 * every jitsu started with the same endpoints and prefix, plus what those
 * instances need to act as one (the `SharedState` contract): a per-VM start
 * lock under a short lease, the latest activity of each VM over every
 * instance, and the election of the one instance that stops idle VMs.
 *
 * Keys, under the prefix (default `/jitsu/`):
 * - `vms/<label>`: the VM's record (JSON VmRecord plus `by`, the instance that
 *   last changed it). Instances write deltas, not whole records: each keeps
 *   what it last wrote (its baseline) and adds its own new requests and starts
 *   to what etcd holds, takes the later last request and start time, and
 *   writes the state only when its own view of it changed. One transaction per
 *   batch (at most `MAX_TXN_OPS` keys), guarded by each key's mod revision and
 *   retried on a conflict, so two instances never lose each other's counts.
 * - `locks/<label>`: the start lock (etcd3's Lock: a put-if-absent under a
 *   lease of `LOCK_TTL_S`, kept alive while the start runs).
 * - `reaper`: the reaper election (etcd's election recipe, lease `ELECTION_TTL_S`).
 *
 * One watch on the prefix keeps the records in memory (the shared view of
 * every VM's activity) and wakes the instances waiting for a start lock.
 * Writes are coalesced: at most one commit a second.
 */
import { EventEmitter } from "node:events";
import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import { randomBytes } from "node:crypto";
import { createRequire } from "node:module";
import type { Etcd3, Campaign, IOptions, Lock, Namespace, Watcher } from "etcd3";
import { StoreError, describeError } from "../errors/index.js";
import type { Logger } from "../log/index.js";
import type { SharedState, SharedStatus, StartLock, Store, VmRecord } from "./contract.js";

/** The start lock's lease: a dead holder's lock is gone after this long. */
type Etcd3Module = typeof import("etcd3");
let etcd3: Etcd3Module | null = null;
/** Loaded on first use, not at import: a jitsu without --etcd does not pay for gRPC. */
function etcd3Module(): Etcd3Module {
  etcd3 ??= createRequire(import.meta.url)("etcd3") as Etcd3Module;
  return etcd3;
}

export const LOCK_TTL_S = 3;
/** The reaper election's lease: a dead reaper is replaced within about this long. */
export const ELECTION_TTL_S = 3;
/** etcd's default --max-txn-ops is 128; a batch stays under it. */
export const MAX_TXN_OPS = 100;
/** Writes are committed at most this often. */
export const WRITE_INTERVAL_MS = 1000;
/**
 * How often etcd is read to know it answers; connected() is false once the
 * last answer is older than HEARTBEAT_STALE_MS, and etcd is then logged as
 * lost (one failed call is not: with several members, the client retries on
 * another, and a member that dies drops the calls in flight on it).
 */
const HEARTBEAT_MS = 1000;
const HEARTBEAT_STALE_MS = 3000;
/** A unary call gives up after this long (then etcd counts as unreachable). */
const CALL_TIMEOUT_MS = 2000;

export interface EtcdSettings {
  readonly endpoints: readonly string[];
  /** PEM file paths for TLS (https endpoints). */
  readonly ca?: string | undefined;
  readonly cert?: string | undefined;
  readonly key?: string | undefined;
  readonly user?: string | undefined;
  readonly password?: string | undefined;
  /** Key prefix; ends with '/'. */
  readonly prefix: string;
}

interface SharedRecord extends VmRecord {
  /** The instance that last changed the record. */
  readonly by?: string;
}

interface Pending {
  records: Map<string, VmRecord>;
  done: Promise<void>;
  resolve: () => void;
  reject: (err: unknown) => void;
}

/** The connection options for etcd3, from the settings (reads the PEM files). */
export function etcdOptions(settings: EtcdSettings): IOptions {
  const options: IOptions = {
    hosts: [...settings.endpoints],
    dialTimeout: CALL_TIMEOUT_MS,
    // Streams (watch, lease keep-alive) have no deadline; unary calls do, so a dead etcd is
    // noticed within CALL_TIMEOUT_MS instead of hanging.
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + CALL_TIMEOUT_MS }),
  };
  if (settings.ca !== undefined || settings.endpoints.some((e) => e.startsWith("https:"))) {
    options.credentials = {
      rootCertificate: settings.ca === undefined ? Buffer.alloc(0) : readFileSync(settings.ca),
      ...(settings.cert !== undefined ? { certChain: readFileSync(settings.cert) } : {}),
      ...(settings.key !== undefined ? { privateKey: readFileSync(settings.key) } : {}),
    };
  }
  if (settings.user !== undefined) {
    options.auth = { username: settings.user, password: settings.password ?? "" };
  }
  return options;
}

export class EtcdStore implements Store, SharedState {
  /** This instance in etcd (records' `by`, the election's value). */
  readonly instance = `${hostname()}:${process.pid}:${randomBytes(3).toString("hex")}`;
  private readonly client: Etcd3;
  private readonly ns: Namespace;
  private readonly where: string;
  /** Every VM's record as etcd holds it (kept by the watch). */
  private readonly shared = new Map<string, SharedRecord>();
  /** What this instance last wrote (or read at load) for each VM: the base of its deltas. */
  private readonly baseline = new Map<string, VmRecord>();
  /** Fired with a label when its record or its lock changes. */
  private readonly changes = new EventEmitter();
  private readonly remoteListeners: ((label: string, state: string) => void)[] = [];
  private watcher: Watcher | null = null;
  private campaign: Campaign | null = null;
  private leader = false;
  /** What the last log line said (one line on loss, one on recovery). */
  private reachable = true;
  /** The last error of a call to etcd, named in the loss's log line. */
  private lastError: unknown = undefined;
  private watching = false;
  private closed = false;
  private pending: Pending | null = null;
  private lastCommit = 0;
  private commitTimer: NodeJS.Timeout | null = null;
  private campaignTimer: NodeJS.Timeout | null = null;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  /** When etcd last answered a call (Date.now()). */
  private lastAnswer = Date.now();
  private committing: Promise<void> = Promise.resolve();

  private constructor(
    private readonly settings: EtcdSettings,
    private readonly log: Logger,
    client?: Etcd3,
  ) {
    this.client = client ?? new (etcd3Module().Etcd3)(etcdOptions(settings));
    this.ns = this.client.namespace(settings.prefix);
    this.where = `etcd ${settings.endpoints.join(",")} (prefix ${settings.prefix})`;
    this.changes.setMaxListeners(0);
  }

  /**
   * Connects (one read of the records, within a few seconds) and starts the
   * watch and the reaper campaign. Throws StoreError when etcd cannot be reached
   * or refuses us (TLS, user and password).
   */
  static async open(settings: EtcdSettings, log: Logger): Promise<EtcdStore> {
    let store: EtcdStore;
    try {
      store = new EtcdStore(settings, log);
    } catch (err) {
      throw new StoreError(`etcd ${settings.endpoints.join(",")}`, `cannot be used: ${describeError(err)}`, {
        cause: err,
      });
    }
    try {
      await store.refresh();
      await store.watch();
    } catch (err) {
      await store.close();
      throw new StoreError(
        store.where,
        `cannot be reached: ${etcdReason(err)} (is etcd running there, and are --etcd-ca, --etcd-cert, --etcd-key, --etcd-user right?)`,
        { cause: err },
      );
    }
    store.runCampaign();
    store.heartbeat();
    return store;
  }

  // ---- Store ---------------------------------------------------------------

  async load(): Promise<VmRecord[]> {
    const records = [...this.shared.values()].map(plain);
    for (const r of records) this.baseline.set(r.label, r);
    return records;
  }

  /**
   * Queues `records` for the next commit (at most one a second); resolves when
   * they are in etcd. Records equal to what this instance last wrote are left out.
   */
  write(records: readonly VmRecord[]): Promise<void> {
    if (this.closed) return Promise.reject(new StoreError(this.where, "is closed"));
    const changed = records.filter((r) => !sameRecord(r, this.baseline.get(r.label)));
    if (changed.length === 0) return this.pending?.done ?? Promise.resolve();
    if (this.pending === null) {
      let resolve!: () => void;
      let reject!: (err: unknown) => void;
      const done = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      this.pending = { records: new Map(), done, resolve, reject };
      const wait = Math.max(0, this.lastCommit + WRITE_INTERVAL_MS - Date.now());
      this.commitTimer = setTimeout(() => this.commitPending(), wait);
    }
    for (const r of changed) this.pending.records.set(r.label, r);
    return this.pending.done;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    // The last writes first (the summoner flushes before closing the store).
    if (this.pending !== null) {
      if (this.commitTimer !== null) clearTimeout(this.commitTimer);
      this.commitPending();
    }
    await this.committing.catch(() => undefined);
    this.closed = true;
    if (this.campaignTimer !== null) clearTimeout(this.campaignTimer);
    if (this.heartbeatTimer !== null) clearTimeout(this.heartbeatTimer);
    const campaign = this.campaign;
    this.campaign = null;
    this.leader = false;
    await campaign?.resign().catch(() => undefined);
    await this.watcher?.cancel().catch(() => undefined);
    this.client.close();
  }

  // ---- SharedState ---------------------------------------------------------

  /** etcd answered within HEARTBEAT_STALE_MS, and the watch runs. */
  connected(): boolean {
    return this.watching && Date.now() - this.lastAnswer < HEARTBEAT_STALE_MS;
  }

  lastRequest(label: string): number | null {
    return this.shared.get(label)?.lastRequest ?? null;
  }

  isReaper(): boolean {
    return this.leader && this.connected();
  }

  onRemoteState(listener: (label: string, state: string) => void): void {
    this.remoteListeners.push(listener);
  }

  describe(): SharedStatus {
    return {
      store: "etcd",
      endpoints: this.settings.endpoints,
      prefix: this.settings.prefix,
      instance: this.instance,
      connected: this.connected(),
      reaper: this.isReaper(),
      lastAnswer: this.lastAnswer,
    };
  }

  /**
   * Takes `label`'s start lock. While another instance holds it, waits (woken by
   * the watch) until that instance's start has made the VM ready (resolves with
   * null: adopt it) or the lock is gone (released, or its holder died and its
   * lease expired: take it). Retries while etcd is unreachable. Rejects with the
   * signal's reason once it aborts (--start-timeout).
   */
  async lockStart(label: string, signal: AbortSignal): Promise<StartLock | null> {
    let logged = false;
    for (;;) {
      signal.throwIfAborted();
      // Listen before trying, so a release between the try and the wait is not missed.
      const woken = this.nextChange(label, signal);
      const before = this.shared.get(label);
      const lock = this.ns.lock(`locks/${label}`).ttl(LOCK_TTL_S);
      try {
        await lock.acquire();
        woken.cancel();
        this.noteReachable(true);
        return this.startLock(lock);
      } catch (err) {
        if (!(err instanceof etcd3Module().EtcdLockFailedError)) {
          this.noteReachable(false, err);
        } else if (!logged) {
          logged = true;
          this.log.info(`VM '${label}' is being started by another jitsu; waiting for it`);
        }
      }
      await woken.promise;
      const now = this.shared.get(label);
      // Ready by another instance's start since we began waiting: answer it (the caller adopts it).
      if (now !== before && now?.state === "ready" && now.by !== this.instance) return null;
    }
  }

  // ---- internals -----------------------------------------------------------

  private startLock(lock: Lock): StartLock {
    let released = false;
    return {
      release: async () => {
        if (released) return;
        released = true;
        await lock.release().catch((err: unknown) => this.noteReachable(false, err));
      },
    };
  }

  /**
   * A promise that resolves at the next change of `label`'s record or lock, or
   * after LOCK_TTL_S (a watch event lost while etcd was away must not leave a
   * start waiting forever), or when `signal` aborts.
   */
  private nextChange(label: string, signal: AbortSignal): { promise: Promise<void>; cancel(): void } {
    let done!: () => void;
    const promise = new Promise<void>((resolve) => (done = resolve));
    const onChange = (changed: string): void => {
      if (changed === label) finish();
    };
    const timer = setTimeout(() => finish(), LOCK_TTL_S * 1000);
    const finish = (): void => {
      clearTimeout(timer);
      this.changes.off("change", onChange);
      signal.removeEventListener("abort", finish);
      done();
    };
    this.changes.on("change", onChange);
    signal.addEventListener("abort", finish);
    return { promise, cancel: finish };
  }

  /** Reads every record into the shared view. */
  private async refresh(): Promise<void> {
    const res = await this.ns.getAll().prefix("vms/").exec();
    this.shared.clear();
    for (const kv of res.kvs) {
      const label = this.labelOf(kv.key, "vms/");
      const record = parseRecord(kv.value);
      if (label !== null && record !== null) this.shared.set(label, record);
    }
  }

  private async watch(): Promise<void> {
    const watcher = await this.ns.watch().prefix("").create();
    this.watcher = watcher;
    this.watching = true;
    watcher.on("put", (kv) => this.applyWatched(kv.key, kv.value));
    watcher.on("delete", (kv) => this.applyWatched(kv.key, null));
    watcher.on("disconnected", (err) => {
      this.watching = false;
      this.noteReachable(false, err);
    });
    watcher.on("connected", () => {
      if (this.watching) return;
      // Back: re-read everything (what changed while away may be compacted out of the watch).
      this.refresh()
        .then(() => {
          this.watching = true;
          this.noteReachable(true);
          for (const label of this.shared.keys()) this.changes.emit("change", label);
        })
        .catch((err: unknown) => this.noteReachable(false, err));
    });
    watcher.on("error", (err) => this.noteReachable(false, err));
  }

  private applyWatched(key: Buffer, value: Buffer | null): void {
    const name = key.toString();
    if (name.startsWith("locks/")) {
      // etcd3's Lock keys are locks/<label>; wake the waiters of that VM.
      this.changes.emit("change", name.slice("locks/".length));
      return;
    }
    const label = this.labelOf(key, "vms/");
    if (label === null) return;
    const record = value === null ? null : parseRecord(value);
    if (record === null) this.shared.delete(label);
    else {
      const before = this.shared.get(label);
      this.shared.set(label, record);
      if (record.by !== undefined && record.by !== this.instance && before?.state !== record.state) {
        for (const listener of this.remoteListeners) listener(label, record.state);
      }
    }
    this.changes.emit("change", label);
  }

  private labelOf(key: Buffer, under: string): string | null {
    let name = key.toString();
    if (name.startsWith(this.settings.prefix)) name = name.slice(this.settings.prefix.length);
    return name.startsWith(under) ? name.slice(under.length) : null;
  }

  /** Campaigns for the reaper until closed; a lost campaign (etcd away, lease lost) is begun again. */
  private runCampaign(): void {
    if (this.closed) return;
    const campaign = this.ns.election("reaper", ELECTION_TTL_S).campaign(this.instance);
    this.campaign = campaign;
    campaign.on("elected", () => {
      if (this.campaign !== campaign) return;
      this.leader = true;
      this.log.info(
        `This jitsu (${this.instance}) now runs the idle reaper for the instances on ${this.where}`,
      );
    });
    campaign.on("error", (err: Error) => {
      if (this.campaign !== campaign) return;
      if (this.leader) this.log.warn(`This jitsu no longer runs the idle reaper: ${etcdReason(err)}`);
      this.leader = false;
      this.campaign = null;
      this.noteReachable(false, err);
      campaign.resign().catch(() => undefined);
      this.campaignTimer = setTimeout(() => this.runCampaign(), 1000);
    });
  }

  /**
   * One cheap read every HEARTBEAT_MS: a watch or a lease keep-alive may take
   * long to notice a dead etcd, and the reaper must not stop a VM on a view of
   * the others that is older than a few seconds.
   */
  private heartbeat(): void {
    if (this.closed) return;
    this.heartbeatTimer = setTimeout(() => {
      this.ns
        .get("heartbeat")
        .exec()
        .then(
          () => this.noteReachable(true),
          (err: unknown) => this.noteReachable(false, err),
        )
        .finally(() => {
          if (!this.closed && this.reachable && Date.now() - this.lastAnswer >= HEARTBEAT_STALE_MS) {
            this.reachable = false;
            this.log.warn(
              `etcd is unreachable at ${this.where} (${etcdReason(this.lastError)}): ready VMs are still answered, cold starts wait for it, no VM is stopped until it is back`,
            );
          }
          this.heartbeat();
        });
    }, HEARTBEAT_MS);
  }

  /**
   * A call's outcome: an answer makes etcd reachable (one line when it was
   * lost); a failure is only remembered (the heartbeat logs the loss once no
   * call has been answered for HEARTBEAT_STALE_MS).
   */
  private noteReachable(ok: boolean, err?: unknown): void {
    if (!ok) {
      this.lastError = err;
      return;
    }
    this.lastAnswer = Date.now();
    if (this.closed || this.reachable) return;
    this.reachable = true;
    this.log.info(`etcd is reachable again at ${this.where}; sharing state with the other instances again`);
  }

  private commitPending(): void {
    const batch = this.pending;
    this.pending = null;
    this.commitTimer = null;
    if (batch === null) return;
    this.committing = this.committing
      .then(() => this.commit([...batch.records.values()]))
      .then(
        () => {
          this.noteReachable(true);
          batch.resolve();
        },
        (err: unknown) => {
          this.noteReachable(false, err);
          batch.reject(new StoreError(this.where, `cannot write: ${etcdReason(err)}`, { cause: err }));
        },
      )
      .finally(() => {
        this.lastCommit = Date.now();
      });
  }

  /** Merges `records` into etcd's, MAX_TXN_OPS at a time, each batch one guarded transaction. */
  private async commit(records: readonly VmRecord[]): Promise<void> {
    for (let i = 0; i < records.length; i += MAX_TXN_OPS) {
      const batch = records.slice(i, i + MAX_TXN_OPS);
      for (let attempt = 0; ; attempt++) {
        if (await this.commitBatch(batch)) break;
        if (attempt >= 10) throw new Error("another instance kept changing the same records (10 conflicts)");
      }
      for (const r of batch) this.baseline.set(r.label, r);
    }
  }

  private async commitBatch(batch: readonly VmRecord[]): Promise<boolean> {
    const current = await Promise.all(batch.map((r) => this.ns.get(`vms/${r.label}`).exec()));
    let txn: ReturnType<Namespace["if"]> | null = null;
    const puts = batch.map((r, i) => {
      const kv = current[i]!.kvs[0];
      const key = `vms/${r.label}`;
      const guard: [string, "Mod" | "Create", "==", number | string] = kv
        ? [key, "Mod", "==", kv.mod_revision]
        : [key, "Create", "==", 0];
      txn = txn === null ? this.ns.if(...guard) : txn.and(...guard);
      const merged = this.merge(r, kv ? parseRecord(kv.value) : null);
      return this.ns.put(key).value(JSON.stringify(merged));
    });
    const res = await txn!.then(...puts).commit();
    return res.succeeded;
  }

  /** This instance's changes since its baseline, applied to etcd's record. */
  private merge(r: VmRecord, there: SharedRecord | null): SharedRecord {
    const base = this.baseline.get(r.label);
    if (there === null) return { ...r, by: this.instance };
    const same = there.backend === r.backend && there.backendRef === r.backendRef;
    if (!same) return { ...r, by: this.instance };
    const requests = Math.max(0, r.totalRequests - (base?.totalRequests ?? there.totalRequests));
    const starts = Math.max(0, r.totalStarts - (base?.totalStarts ?? there.totalStarts));
    const stateChanged = base === undefined || base.state !== r.state;
    return {
      ...r,
      totalRequests: there.totalRequests + requests,
      totalStarts: there.totalStarts + starts,
      lastRequest: later(there.lastRequest, r.lastRequest),
      startedAt: later(there.startedAt, r.startedAt),
      state: stateChanged ? r.state : there.state,
      by: stateChanged ? this.instance : (there.by ?? this.instance),
    };
  }
}

function later(a: number | null, b: number | null): number | null {
  if (a === null) return b;
  if (b === null) return a;
  return Math.max(a, b);
}

function plain(r: SharedRecord): VmRecord {
  const { by: _by, ...record } = r;
  return record;
}

function sameRecord(a: VmRecord, b: VmRecord | undefined): boolean {
  return (
    b !== undefined &&
    a.state === b.state &&
    a.totalRequests === b.totalRequests &&
    a.totalStarts === b.totalStarts &&
    a.lastRequest === b.lastRequest &&
    a.startedAt === b.startedAt &&
    a.backendRef === b.backendRef &&
    a.backend === b.backend &&
    a.stopMode === b.stopMode &&
    a.names.length === b.names.length &&
    a.names.every((n, i) => n === b.names[i]) &&
    a.ips.length === b.ips.length &&
    a.ips.every((n, i) => n === b.ips[i])
  );
}

/** A record read from etcd, or null when it is not one of ours (it is then ignored). */
function parseRecord(value: Buffer): SharedRecord | null {
  try {
    const v = JSON.parse(value.toString()) as Partial<SharedRecord>;
    if (typeof v.label !== "string" || typeof v.state !== "string") return null;
    const num = (x: unknown): number => (typeof x === "number" && Number.isFinite(x) ? x : 0);
    const opt = (x: unknown): number | null => (typeof x === "number" && Number.isFinite(x) ? x : null);
    const list = (x: unknown): string[] =>
      Array.isArray(x) ? x.filter((s): s is string => typeof s === "string") : [];
    return {
      label: v.label,
      names: list(v.names),
      ips: list(v.ips),
      backend: typeof v.backend === "string" ? v.backend : "",
      backendRef: typeof v.backendRef === "string" ? v.backendRef : "",
      state: v.state,
      startedAt: opt(v.startedAt),
      totalStarts: num(v.totalStarts),
      totalRequests: num(v.totalRequests),
      lastRequest: opt(v.lastRequest),
      stopMode: typeof v.stopMode === "string" ? v.stopMode : "",
      ...(typeof v.by === "string" ? { by: v.by } : {}),
    };
  } catch {
    return null;
  }
}

/** etcd3's and gRPC's errors in one line. */
export function etcdReason(err: unknown): string {
  if (err === undefined) return "no answer";
  const message = err instanceof Error ? err.message : String(err);
  return message.split("\n")[0]!;
}
