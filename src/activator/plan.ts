/**
 * Which VMs hold connections, where: each VM's `hold=` ports on its hold
 * address (`hold_address=`, else --hold-address, else -b). Checked at
 * start-up and on each reload, before anything listens: a hold address must
 * be one clients can be given (not a wildcard), and two VMs may share a hold
 * address only on different ports.
 */
import type { HoldPort, VmSpec } from "../config/index.js";
import { ConfigError, UsageError } from "../errors/index.js";

export interface HoldVm {
  readonly label: string;
  readonly address: string;
  readonly ports: readonly HoldPort[];
}

/** The hold listeners of a configuration, one entry per VM with `hold=` ports. */
export type HoldPlan = readonly HoldVm[];

/** `address:port` as a listener key and in messages (`[::1]:80` for IPv6). */
export function endpointText(address: string, port: number): string {
  return address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`;
}

function isWildcard(address: string): boolean {
  return address === "0.0.0.0" || address === "::";
}

/**
 * The plan for `specs`. `defaultAddress` is --hold-address (undefined: none
 * given) and `bind` is -b. Throws a ConfigError naming the VM and the key
 * (or a UsageError naming the option) for a wildcard hold address, and for
 * two VMs on the same hold address and port.
 */
export function holdPlan(
  specs: readonly VmSpec[],
  defaultAddress: string | undefined,
  bind: string,
): HoldPlan {
  const plan: HoldVm[] = [];
  const owners = new Map<string, string>();
  if (defaultAddress !== undefined && isWildcard(defaultAddress)) {
    throw new UsageError(
      `${defaultAddress} is a wildcard: give an address clients can connect to (it is the DNS answer while a VM starts)`,
      "--hold-address",
    );
  }
  for (const spec of specs) {
    if (spec.hold.length === 0) continue;
    const address = spec.holdAddress ?? defaultAddress ?? bind;
    if (isWildcard(address)) {
      const fix =
        spec.holdAddress !== undefined
          ? "give an address clients can connect to"
          : `-b is ${bind}: set --hold-address (or hold_address=) to an address clients can connect to`;
      throw new ConfigError(`the hold address ${address} is a wildcard; ${fix}`, {
        vm: spec.label,
        key: spec.holdAddress !== undefined ? "hold_address" : "hold",
      });
    }
    for (const { port } of spec.hold) {
      const at = endpointText(address, port);
      const other = owners.get(at);
      if (other !== undefined) {
        throw new ConfigError(
          `${at} is already the hold port of VM '${other}'; two VMs may share a hold address only on different ports (give one another port, or its own hold_address=)`,
          { vm: spec.label, key: "hold" },
        );
      }
      owners.set(at, spec.label);
    }
    plan.push({ label: spec.label, address, ports: spec.hold });
  }
  return plan;
}

/** The zone's view of the VMs: each with its hold address when it has one (src/dns answers it while not ready). */
export function zoneVms(
  specs: readonly VmSpec[],
  plan: HoldPlan,
): { label: string; dns: readonly string[]; ips: readonly string[]; holdIps?: readonly string[] }[] {
  const hold = new Map(plan.map((h) => [h.label, [h.address]]));
  return specs.map((spec) => {
    const holdIps = hold.get(spec.label);
    return holdIps === undefined
      ? { label: spec.label, dns: spec.dns, ips: spec.ips }
      : { label: spec.label, dns: spec.dns, ips: spec.ips, holdIps };
  });
}
