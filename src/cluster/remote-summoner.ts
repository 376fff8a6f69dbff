/**
 * A worker's SummonTarget: the ready VMs as the primary last said, answered
 * from memory (the hot path: a map lookup and a count, no IPC, no
 * allocation); anything else is asked of the primary's real Summoner, one
 * message per VM and client prefix however many queries wait for it.
 *
 * Why per client prefix: the primary decides --summon-rate by the client of
 * the summon it is sent. Had a query from another prefix joined the summon of
 * a client over its rate, it would be refused with it (an attacker over its
 * rate could keep anyone from summoning the names it floods); its own summon
 * is judged by its own prefix instead, and the primary joins both into one
 * start.
 */
import type { SummonTarget } from "../dns/index.js";
import { SummonRefusedError, type SummonRefusal } from "../errors/index.js";
import { clientPrefix } from "../summoner/index.js";
import type { ReadyEntry, ToPrimary } from "./protocol.js";

interface Entry {
  /** The addresses while ready (one array instance while unchanged: the DNS server's templates key on it), else null. */
  addresses: readonly string[] | null;
  /** Requests answered (or waited for) since the last report. */
  count: number;
}

interface Flight {
  readonly label: string;
  readonly promise: Promise<readonly string[]>;
  resolve(addresses: readonly string[]): void;
  reject(err: Error): void;
  /** Queries that joined the one summon sent (they are reported as counts). */
  joined: number;
}

export class RemoteSummoner implements SummonTarget {
  private readonly entries = new Map<string, Entry>();
  /** By flightKey(label, client prefix). */
  private readonly flights = new Map<string, Flight>();
  /** Summon id → its flight's key. */
  private readonly byId = new Map<number, string>();
  private nextId = 1;

  /** `send` delivers a message to the primary. */
  constructor(private readonly send: (msg: ToPrimary) => void) {}

  request(label: string, client?: string): readonly string[] | Promise<readonly string[]> {
    const entry = this.entries.get(label);
    if (entry !== undefined && entry.addresses !== null) {
      entry.count++;
      return entry.addresses;
    }
    const key = flightKey(label, client);
    const flight = this.flights.get(key);
    if (flight !== undefined) {
      flight.joined++;
      return flight.promise;
    }
    return this.summon(label, key, client);
  }

  /** A ready VM's addresses from the copy (counted), else null: never asks the primary to start it. */
  requestIfReady(label: string): readonly string[] | null {
    const entry = this.entries.get(label);
    if (entry === undefined || entry.addresses === null) return null;
    entry.count++;
    return entry.addresses;
  }

  /** The primary's full map (at start) or a change. Unchanged addresses keep their array. */
  setReady(set: readonly ReadyEntry[], unset: readonly string[]): void {
    for (const label of unset) {
      const entry = this.entries.get(label);
      if (entry === undefined) continue;
      if (entry.count === 0) this.entries.delete(label);
      else entry.addresses = null;
    }
    for (const [label, addresses] of set) {
      const entry = this.entries.get(label);
      if (entry === undefined)
        this.entries.set(label, { addresses: Object.freeze([...addresses]), count: 0 });
      else if (entry.addresses === null || !sameList(entry.addresses, addresses)) {
        entry.addresses = Object.freeze([...addresses]);
      }
    }
  }

  /** The primary's answer to a summon (`refused`: for the client's --summon-rate, answered REFUSED). */
  settle(
    id: number,
    outcome: { addresses: readonly string[] } | { error: string; refused?: SummonRefusal },
  ): void {
    const key = this.byId.get(id);
    if (key === undefined) return;
    this.byId.delete(id);
    const flight = this.flights.get(key);
    if (flight === undefined) return;
    this.flights.delete(key);
    if ("error" in outcome) {
      if (outcome.refused !== undefined) {
        // Not counted: the primary counts no refused query, and those that joined were refused too.
        flight.reject(new SummonRefusedError(outcome.refused, outcome.error));
        return;
      }
      if (flight.joined > 0) this.count(flight.label, flight.joined);
      flight.reject(new Error(outcome.error));
      return;
    }
    // The first query was counted by the primary's request(); those that joined are reported.
    if (flight.joined > 0) this.count(flight.label, flight.joined);
    flight.resolve(outcome.addresses);
  }

  /** The counts since the last call (and resets them): [label, requests]. */
  takeCounts(): [string, number][] {
    const out: [string, number][] = [];
    for (const [label, entry] of this.entries) {
      if (entry.count === 0) continue;
      out.push([label, entry.count]);
      entry.count = 0;
      if (entry.addresses === null) this.entries.delete(label);
    }
    return out;
  }

  /** Summons waiting for the primary (they fail if it is gone). */
  failAll(reason: string): void {
    for (const flight of this.flights.values()) flight.reject(new Error(reason));
    this.flights.clear();
    this.byId.clear();
  }

  private summon(label: string, key: string, client: string | undefined): Promise<readonly string[]> {
    let resolve!: (a: readonly string[]) => void;
    let reject!: (e: Error) => void;
    const promise = new Promise<readonly string[]>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const id = this.nextId++;
    this.flights.set(key, { label, promise, resolve, reject, joined: 0 });
    this.byId.set(id, key);
    this.send(client === undefined ? { t: "summon", id, label } : { t: "summon", id, label, client });
    return promise;
  }

  private count(label: string, n: number): void {
    const entry = this.entries.get(label);
    if (entry === undefined) this.entries.set(label, { addresses: null, count: n });
    else entry.count += n;
  }
}

/** One summon in flight per VM and client prefix (see the top of this file). */
function flightKey(label: string, client: string | undefined): string {
  return client === undefined ? label : `${label}\n${clientPrefix(client)}`;
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
