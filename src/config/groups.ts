/**
 * Groups (`group=`, `after=`): which VMs start together and in what order,
 * checked over the whole configuration at start-up and on each reload (a
 * single VM's keys are checked in spec.ts). The summoner (src/summoner
 * groups.ts) runs the plans this returns.
 */
import { ConfigError } from "../errors/index.js";
import { closest } from "./keys.js";
import type { VmSpec } from "./spec.js";

/** One group, as the configuration describes it. */
export interface GroupPlan {
  readonly name: string;
  /** Member labels in start order: each after the members it names in `after=` (ties in configuration order). */
  readonly members: readonly string[];
  /** Per member label: the labels of the members it starts after (resolved from `after=`). */
  readonly after: ReadonlyMap<string, readonly string[]>;
}

export interface GroupCheckOptions {
  /** --max-running (0: no limit): a group larger than it could never be up at once. */
  readonly maxRunning?: number;
}

/**
 * The groups `specs` describe, by name, in the order first seen. Throws a
 * ConfigError naming the VM and key for an `after=` that names no VM, names
 * the VM itself, or a VM outside its group, for a cycle of `after=`, and for
 * a group larger than --max-running.
 */
export function groupPlans(specs: readonly VmSpec[], opts: GroupCheckOptions = {}): Map<string, GroupPlan> {
  const byGroup = new Map<string, VmSpec[]>();
  for (const spec of specs) {
    if (spec.group === undefined) continue;
    let members = byGroup.get(spec.group);
    if (members === undefined) byGroup.set(spec.group, (members = []));
    members.push(spec);
  }
  const plans = new Map<string, GroupPlan>();
  if (byGroup.size === 0) return plans;
  const find = finder(specs);
  for (const [name, members] of byGroup) {
    const after = new Map<string, string[]>();
    for (const spec of members) {
      const deps: string[] = [];
      for (const text of spec.after) {
        const other = find(text);
        if (other === undefined) {
          const near = closest(text, [...new Set(members.map((m) => m.label))]);
          throw new ConfigError(
            `no VM '${text}' is configured${near === undefined ? "" : `; did you mean '${near}'?`} (after= names another member of group '${name}' by its name, uuid or a DNS name)`,
            { vm: spec.label, key: "after" },
          );
        }
        if (other === spec) {
          throw new ConfigError("a VM cannot start after itself", { vm: spec.label, key: "after" });
        }
        if (other.group !== name) {
          throw new ConfigError(
            `VM '${other.label}' is ${other.group === undefined ? "in no group" : `in group '${other.group}'`}, not in group '${name}'; after= orders members of the same group (give it group=${name}, or drop this after=)`,
            { vm: spec.label, key: "after" },
          );
        }
        if (!deps.includes(other.label)) deps.push(other.label);
      }
      after.set(spec.label, deps);
    }
    const order = startOrder(name, members, after);
    const max = opts.maxRunning ?? 0;
    if (max > 0 && order.length > max) {
      throw new ConfigError(
        `group '${name}' has ${order.length} members (${order.join(", ")}) but --max-running is ${max}: they could never all be up at once; raise --max-running or make the group smaller`,
      );
    }
    plans.set(name, { name, members: order, after });
  }
  return plans;
}

/** Looks a VM up by label, then by name, uuid or DNS name. */
function finder(specs: readonly VmSpec[]): (text: string) => VmSpec | undefined {
  const byLabel = new Map(specs.map((s) => [s.label, s]));
  return (text) => {
    const hit = byLabel.get(text);
    if (hit !== undefined) return hit;
    const lower = text.toLowerCase().replace(/\.$/, "");
    return specs.find((s) => s.name === text || s.uuid === text || s.dns.includes(lower));
  };
}

/**
 * Kahn's algorithm: members whose `after=` members are all placed come next,
 * in configuration order. What is left when none can be placed is a cycle.
 */
function startOrder(
  group: string,
  members: readonly VmSpec[],
  after: ReadonlyMap<string, readonly string[]>,
): string[] {
  const placed = new Set<string>();
  const order: string[] = [];
  while (order.length < members.length) {
    const next = members.filter(
      (m) => !placed.has(m.label) && after.get(m.label)!.every((d) => placed.has(d)),
    );
    if (next.length === 0) {
      const cycle = findCycle(
        members.filter((m) => !placed.has(m.label)).map((m) => m.label),
        after,
      );
      throw new ConfigError(
        `after= makes a cycle in group '${group}' (${cycle.join(" after ")}): none of them could start first; drop one of these after=`,
        { vm: cycle[0], key: "after" },
      );
    }
    for (const m of next) {
      placed.add(m.label);
      order.push(m.label);
    }
  }
  return order;
}

/** One cycle among `left` (each of which starts after another of `left`): [a, b, ..., a]. */
function findCycle(left: readonly string[], after: ReadonlyMap<string, readonly string[]>): string[] {
  const remaining = new Set(left);
  const path: string[] = [];
  let at = left[0]!;
  while (!path.includes(at)) {
    path.push(at);
    at = after.get(at)!.find((d) => remaining.has(d))!;
  }
  return [...path.slice(path.indexOf(at)), at];
}
