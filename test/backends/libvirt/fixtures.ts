/** Domains for the libvirt test driver (test:///<path>), shared by the libvirt tests and benchmark. */
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

/** A domain to define with virsh in test:///default. */
export function extraDomainXml(name: string, uuid: string): string {
  return `<domain type='test'><name>${name}</name><uuid>${uuid}</uuid><memory>65536</memory><os><type>hvm</type></os></domain>`;
}

export function spec(config: string, n = 1): VmSpec {
  return buildVmSpec(parseConfigString(config, `CONFIG #${n}`), `CONFIG #${n}`, {
    backendKeys: libvirtBackend.keys,
    backendName: "libvirt",
    discoversAddresses: libvirtBackend.discoversAddresses,
  });
}

/**
 * The test guest (scripts/build-test-guest.sh, in `dir`) as a qemu-driver
 * domain: TCG, its NIC and a hostfwd of 127.0.0.1:`hostPort` to the guest's
 * port 80 through <qemu:commandline> (qemu:///session has no port forwarding
 * without passt), console to `<dir>/<name>-console.log`.
 */
export function guestDomainXml(
  name: string,
  dir: string,
  hostPort: number,
  cmdline = "console=ttyS0 quiet panic=-1",
): string {
  return `<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>${name}</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>${dir}/vmlinuz</kernel>
    <initrd>${dir}/initrd.gz</initrd>
    <cmdline>${cmdline}</cmdline>
  </os>
  <features><acpi/></features>
  <cpu mode='maximum'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='file'><source path='${dir}/${name}-console.log' append='on'/></serial>
    <memballoon model='none'/>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-netdev'/>
    <qemu:arg value='user,id=hf0,hostfwd=tcp:127.0.0.1:${hostPort}-:80'/>
    <qemu:arg value='-device'/>
    <qemu:arg value='virtio-net-pci,netdev=hf0,mac=52:54:00:12:34:56,addr=0x10'/>
  </qemu:commandline>
</domain>
`;
}
