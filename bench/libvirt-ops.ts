/**
 * Micro-benchmark: each libvirt operation jitsu uses, through our TypeScript
 * client and through `virsh` (libvirt's own C client), against the same
 * private libvirtd (test driver, test:///default), in the same run,
 * interleaved, best of two rounds per side.
 *
 *  - per-op: one open connection, the operation repeated N times. virsh runs
 *    the same N commands in ONE invocation ("domstate d; domstate d; ..."), and
 *    its start-up cost (the same invocation with no commands) is subtracted, so
 *    both columns are the cost of the RPCs. Every virsh domain command looks
 *    the domain up by name first, so ours does too (lookup + op).
 *  - session: what a one-shot client does: open, lookup, state, suspend,
 *    resume, close. Ours in-process; virsh as one process (exec included).
 *
 * Usage: node dist/bench/libvirt-ops.js [N]      (N defaults to 200)
 * Traffic stays on a unix socket in a temp dir.
 */
import { spawnSync } from "node:child_process";
import { LibvirtConnection } from "../src/backends/libvirt/connection.js";
import { getState, lookupByName, simpleDomainCall } from "../src/backends/libvirt/domain.js";
import { Proc } from "../src/backends/libvirt/protocol.js";
import { parseLibvirtUri } from "../src/backends/libvirt/uri.js";
import { silentLogger } from "../src/log/index.js";
import { PrivateLibvirtd, extraDomainXml } from "../test/doubles/libvirtd.js";

const N = Math.max(10, Math.min(2000, Number(process.argv[2] ?? 200) || 200));
const DOM = "bench";

function virshMs(uri: string, commands: string[]): number {
  const t0 = process.hrtime.bigint();
  const r = spawnSync("virsh", ["-q", "-c", uri, commands.join(" ; ")], {
    encoding: "utf8",
    timeout: 120_000,
  });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 0) throw new Error(`virsh failed: ${r.stderr.trim()}`);
  return ms;
}

async function timeMs(fn: () => Promise<void>): Promise<number> {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

async function openConnection(uri: string): Promise<LibvirtConnection> {
  const c = new LibvirtConnection(parseLibvirtUri(uri), { log: silentLogger() });
  await c.connect();
  return c;
}

interface Row {
  op: string;
  ours: number;
  virsh: number;
  note: string;
}

async function main(): Promise<void> {
  const daemon = new PrivateLibvirtd();
  await daemon.start();
  const uri = daemon.uri("test:///default");
  const holder = await openConnection(uri); // keeps test:///default (and our domain) alive
  try {
    daemon.virsh(
      uri,
      `define ${daemon.writeFile("bench.xml", extraDomainXml(DOM, "0badc0de-0000-4000-8000-0000000be7c4"))}`,
    );
    daemon.virsh(uri, `start ${DOM}`);
    const c = await openConnection(uri);

    const ops: { op: string; ours: () => Promise<void>; virsh: string[]; note: string }[] = [
      {
        op: "open+close",
        ours: async () => {
          const x = await openConnection(uri);
          await x.close();
        },
        virsh: [`connect ${uri}`],
        note: "auth list, keepalive feature, CONNECT_OPEN (+ virsh: its extra calls)",
      },
      {
        op: "lookup",
        ours: async () => void (await lookupByName(c, DOM)),
        virsh: [`domid ${DOM}`],
        note: "DOMAIN_LOOKUP_BY_NAME",
      },
      {
        op: "state",
        ours: async () => void (await getState(c, await lookupByName(c, DOM))),
        virsh: [`domstate ${DOM}`],
        note: "lookup + DOMAIN_GET_STATE",
      },
      {
        op: "suspend+resume",
        ours: async () => {
          await simpleDomainCall(c, Proc.DOMAIN_SUSPEND, await lookupByName(c, DOM));
          await simpleDomainCall(c, Proc.DOMAIN_RESUME, await lookupByName(c, DOM));
        },
        virsh: [`suspend ${DOM}`, `resume ${DOM}`],
        note: "lookup + DOMAIN_SUSPEND, lookup + DOMAIN_RESUME",
      },
    ];

    const rows: Row[] = [];
    for (const { op, ours, virsh, note } of ops) {
      const n = op === "open+close" ? Math.max(10, Math.floor(N / 4)) : N;
      let bestOurs = Infinity;
      let bestVirsh = Infinity;
      for (let round = 0; round < 2; round++) {
        // ours: n sequential operations on one connection
        const t = await timeMs(async () => {
          for (let i = 0; i < n; i++) await ours();
        });
        bestOurs = Math.min(bestOurs, t / n);
        // virsh: the same n operations in one invocation, minus an empty invocation
        const base = virshMs(uri, ["uri"]);
        const full = virshMs(uri, ["uri", ...Array.from({ length: n }, () => virsh).flat()]);
        bestVirsh = Math.min(bestVirsh, Math.max(0, full - base) / n);
      }
      rows.push({ op, ours: bestOurs, virsh: bestVirsh, note });
    }

    // One-shot session: open, lookup, state, suspend, resume, close.
    let sessOurs = Infinity;
    let sessVirsh = Infinity;
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < 5; i++) {
        sessOurs = Math.min(
          sessOurs,
          await timeMs(async () => {
            const x = await openConnection(uri);
            const d = await lookupByName(x, DOM);
            await getState(x, d);
            await simpleDomainCall(x, Proc.DOMAIN_SUSPEND, d);
            await simpleDomainCall(x, Proc.DOMAIN_RESUME, d);
            await x.close();
          }),
        );
        sessVirsh = Math.min(sessVirsh, virshMs(uri, [`domstate ${DOM}`, `suspend ${DOM}`, `resume ${DOM}`]));
      }
    }
    rows.push({
      op: "session",
      ours: sessOurs,
      virsh: sessVirsh,
      note: "open, lookup, state, suspend, resume, close (virsh: one process, exec included)",
    });

    // Concurrency, which virsh cannot do: N state calls in flight at once on one connection.
    const d = await lookupByName(c, DOM);
    const conc = await timeMs(async () => {
      await Promise.all(Array.from({ length: N }, () => getState(c, d)));
    });
    await c.close();

    console.log(
      `libvirt operations, ms per operation (best of 2 rounds; N=${N}; libvirtd test driver over a unix socket)`,
    );
    console.log(
      `${"operation".padEnd(16)}${"jitsu (TS)".padStart(12)}${"virsh (C)".padStart(12)}${"ratio".padStart(8)}  what`,
    );
    for (const r of rows) {
      console.log(
        `${r.op.padEnd(16)}${r.ours.toFixed(3).padStart(12)}${r.virsh.toFixed(3).padStart(12)}${(r.ours / Math.max(r.virsh, 1e-6)).toFixed(2).padStart(8)}  ${r.note}`,
      );
    }
    console.log(
      `${N} concurrent DOMAIN_GET_STATE calls on one connection: ${conc.toFixed(1)} ms total, ${(conc / N).toFixed(3)} ms/op`,
    );
  } finally {
    await holder.close();
    await daemon.destroy();
  }
}

main().catch((err: unknown) => {
  console.error(`libvirt-ops: ${(err as Error).message}`);
  process.exitCode = 1;
});
