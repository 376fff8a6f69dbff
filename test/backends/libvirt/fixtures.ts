/** What the libvirt tests share: domains for the test driver (test:///<path>), specs, and an error check. */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { buildVmSpec, parseConfigString, type VmSpec } from "../../../src/config/index.js";
import { libvirtBackend } from "../../../src/backends/libvirt/index.js";

export const WWW_UUID = "6695eb01-f6a4-8304-79aa-97f2502e193f";
export const DB_UUID = "a1b2c3d4-0000-4000-8000-000000000002";

function testDomain(name: string, uuid: string, mac: string, runstate: number): string {
  return `
  <domain type='test'>
    <name>${name}</name>
    <uuid>${uuid}</uuid>
    <memory>65536</memory>
    <os><type>hvm</type></os>
    <devices>
      <interface type='network'><mac address='${mac}'/><source network='default'/></interface>
    </devices>
    <test:runstate xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>${runstate}</test:runstate>
  </domain>`;
}

/** www starts shut off (runstate 5), db running (1); both have a NIC on the test driver's network. */
export const NODE_XML = `<node>
  <network>
    <name>default</name>
    <bridge name='virbr0'/>
    <ip address='192.168.122.1' netmask='255.255.255.0'>
      <dhcp><range start='192.168.122.2' end='192.168.122.254'/></dhcp>
    </ip>
  </network>${testDomain("www", WWW_UUID, "52:54:00:AA:BB:CC", 5)}${testDomain("db", DB_UUID, "52:54:00:00:00:02", 1)}
</node>
`;

export function spec(config: string, n = 1): VmSpec {
  return buildVmSpec(parseConfigString(config, `CONFIG #${n}`), `CONFIG #${n}`, {
    backendKeys: libvirtBackend.keys,
    backendName: "libvirt",
  });
}

/** Asserts that `p` rejects with a one-line message matching `re`. */
export async function rejectsWith(p: Promise<unknown>, re: RegExp): Promise<void> {
  await assert.rejects(p, (err: Error) => {
    assert.equal(err.message.includes("\n"), false, `one line: ${err.message}`);
    assert.match(err.message, re);
    return true;
  });
}

/** Builds (or finds in its cache, $JITSU_GUEST_CACHE) the QEMU test guest; returns its directory. */
export function buildGuest(): string {
  const r = spawnSync("bash", ["scripts/build-test-guest.sh"], { encoding: "utf8", timeout: 600_000 });
  if (r.status !== 0)
    throw new Error(`scripts/build-test-guest.sh failed: ${r.stderr.trim().split("\n").at(-1)}`);
  return r.stdout.trim();
}
