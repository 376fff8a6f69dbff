/**
 * libvirtd SIGKILLed under a running jitsu with the qemu driver and the real
 * test guest (issue 16, "daemon dies mid-start"), through the built CLI and dig.
 * Unlike daemon-faults.test.ts (the test driver, whose state dies with the
 * daemon), the qemu driver keeps each domain's status XML in its run dir, so
 * a new libvirtd in the same dirs reconnects to the QEMU processes the dead
 * one left: this is where adoption can be shown.
 *
 * - killed after it had started the domain, before jitsu got the reply to
 *   virDomainCreateWithFlags: SERVFAIL by --start-timeout, the log names
 *   backend, URI and VM; the new libvirtd takes the QEMU back, and jitsu's next
 *   query adopts it: the same QEMU process, started once;
 * - killed while jitsu is idle with the guest ready: the guest is answered
 *   from memory meanwhile and after, jitsu reconnects, and the reaper still
 *   stops the guest 2 x TTL after its last query;
 * - killed after it launched QEMU but before the guest ran (libvirtd waits for
 *   QEMU's monitor): SERVFAIL by the timeout; the new libvirtd discards the
 *   unfinished QEMU (libvirt kills a domain still "paused, starting up" when
 *   it reconnects), and jitsu's next query boots the guest once: never two
 *   QEMU processes of the domain at once.
 *
 * Where the kill lands is made certain, not left to timing:
 * - a relay between jitsu and libvirtd's socket (jitsu's URI names it) holds
 *   back the daemon's bytes from jitsu's create call on: the reply that the
 *   dying daemon had not yet got out;
 * - the domain's <emulator> is a script that records each launch of the
 *   guest's QEMU (and whether another one was still alive), holds it while
 *   the test's gate is closed, and then execs the real qemu-system-x86_64.
 */
import assert from "node:assert/strict";
import { chmodSync, existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { createServer, connect, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Proc, REMOTE_PROGRAM } from "../../../src/backends/libvirt/protocol.js";
import { PrivateLibvirtd, guestDomainXml } from "../../doubles/libvirtd.js";
import { freePort, run, startCli, tempDir, timedDig, type CliProcess } from "../../support/index.js";
import { httpGet } from "../../support/http.js";
import { buildGuest } from "./fixtures.js";

const START_TIMEOUT_S = 90;
/** jitsu's -t: the reaper stops an idle guest 2 x TTL after its last query. */
const TTL_S = 8;
const NAME = "guest.jitsu.test";

/**
 * A unix-socket relay to libvirtd. Once `holdRepliesAfterCreate()` is armed,
 * the connection whose client sends DOMAIN_CREATE_WITH_FLAGS gets nothing more
 * from the daemon (its bytes are dropped), as when the daemon dies before its
 * reply is out; when the daemon's side closes, the client's does too.
 */
class HoldingRelay {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private armed: (() => void) | null = null;

  constructor(
    readonly path: string,
    private readonly target: string,
  ) {
    this.server = createServer((client) => this.relay(client));
  }

  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(this.path, () => resolve());
    });
  }

  /** Resolves when a client sends its next create call; its replies are held from then on. */
  holdRepliesAfterCreate(): Promise<void> {
    return new Promise((resolve) => (this.armed = resolve));
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  private relay(client: Socket): void {
    const daemon = connect({ path: this.target });
    this.sockets.add(client).add(daemon);
    let holding = false;
    let pending = Buffer.alloc(0);
    client.on("data", (chunk: Buffer) => {
      // remote_protocol.x framing: u32 length (itself included), then prog, vers, proc, type, serial, status.
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 4 && pending.length >= pending.readUInt32BE(0)) {
        const len = pending.readUInt32BE(0);
        const call = pending.subarray(0, len);
        pending = pending.subarray(len);
        const isCreate =
          call.length >= 20 &&
          call.readUInt32BE(4) === REMOTE_PROGRAM &&
          call.readInt32BE(12) === Proc.DOMAIN_CREATE_WITH_FLAGS &&
          call.readInt32BE(16) === 0;
        if (isCreate && this.armed !== null) {
          holding = true;
          const fire = this.armed;
          this.armed = null;
          fire();
        }
      }
      daemon.write(chunk);
    });
    daemon.on("data", (chunk: Buffer) => {
      if (!holding) client.write(chunk);
    });
    const end = (): void => {
      client.destroy();
      daemon.destroy();
      this.sockets.delete(client);
      this.sockets.delete(daemon);
    };
    client.on("close", end).on("error", end);
    daemon.on("close", end).on("error", end);
  }
}

/** The <emulator>: records launches of the guest's QEMU, holds one while `gate` exists and `go` does not. */
function emulatorScript(dir: string): string {
  return `#!/bin/sh
d='${dir}'
case " $* " in
  *" guest=guest,"*)
    for p in $(cat "$d/launches" 2>/dev/null); do
      [ -d "/proc/$p" ] && echo "$$ launched while $p was alive" >> "$d/overlaps"
    done
    echo $$ >> "$d/launches"
    if [ -e "$d/gate" ]; then
      i=0
      while [ ! -e "$d/go" ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i + 1)); done
    fi
    ;;
esac
exec /usr/bin/qemu-system-x86_64 "$@"
`;
}

/** QEMU processes of the guest (its command line names the guest and the daemon's dir). */
function guestQemus(dir: string): number[] {
  const out: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmd = readFileSync(`/proc/${entry}/cmdline`, "latin1");
      if (cmd.includes("qemu-system-x86_64") && cmd.includes("guest=guest,") && cmd.includes(dir))
        out.push(Number(entry));
    } catch {
      // gone
    }
  }
  return out;
}

async function until(what: string, withinMs: number, check: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + withinMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${withinMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("libvirtd SIGKILLed under jitsu, qemu driver and a real guest", { timeout: 900_000 }, () => {
  const daemon = new PrivateLibvirtd();
  let relay: HoldingRelay;
  let cli: CliProcess | undefined;
  let dir: Awaited<ReturnType<typeof tempDir>>;
  /** virsh's URI, straight to the daemon; jitsu's goes through the relay. */
  let uri = "";
  let jitsuUri = "";
  let dns = 0;
  let http = 0;

  const file = (name: string): string => join(daemon.dir, name);
  const launches = (): number[] =>
    existsSync(file("launches"))
      ? readFileSync(file("launches"), "utf8").trim().split("\n").filter(Boolean).map(Number)
      : [];
  const state = (): string => daemon.virsh(uri, "domstate guest");
  /** The state in the qemu driver's status XML (what a new libvirtd reconnects from). */
  const statusXml = (): string => {
    const path = join(daemon.dir, "xdg-run", "libvirt", "qemu", "run", "guest.xml");
    return existsSync(path) ? readFileSync(path, "utf8") : "";
  };
  /**
   * One query that may wait for a boot (TCG on a loaded machine). `ms` is dig's own
   * measure (";; Query time"), from its query to jitsu's answer: not the time to spawn
   * dig and see it exit, which a loaded machine stretches.
   */
  const bootQuery = async (): Promise<{ status: string; data: string; ms: number }> => {
    const t0 = Date.now();
    const r = await run(
      "dig",
      ["@127.0.0.1", "-p", String(dns), `+time=${START_TIMEOUT_S + 10}`, "+tries=1", NAME, "A"],
      (START_TIMEOUT_S + 20) * 1000,
    );
    const status = /status: (\w+)/.exec(r.stdout)?.[1] ?? `EXIT${r.code}`;
    const data = new RegExp(`^${NAME.replace(/\./g, "\\.")}\\.\\s+\\d+\\s+IN\\s+A\\s+(\\S+)$`, "m").exec(
      r.stdout,
    )?.[1];
    const queryTime = /;; Query time: (\d+) msec/.exec(r.stdout)?.[1];
    return { status, data: data ?? "", ms: queryTime === undefined ? Date.now() - t0 : Number(queryTime) };
  };
  const mark = (): (() => string) => {
    const from = cli!.output().length;
    return () => cli!.output().slice(from);
  };

  before(async () => {
    const guest = buildGuest();
    dir = await tempDir();
    await daemon.start();
    for (const f of ["vmlinuz", "initrd.gz"]) daemon.writeFile(f, readFileSync(join(guest, f)));
    const emulator = daemon.writeFile("emulator.sh", emulatorScript(daemon.dir));
    chmodSync(emulator, 0o755);
    // The guest's forwarded port is bound again by each QEMU the test boots (minutes apart): a
    // port below the ephemeral range, which no client socket on the machine (other test files'
    // included) can take meanwhile: freePort's are.
    http = await freePort();
    dns = await freePort();
    uri = daemon.uri("qemu:///session");
    const xml = guestDomainXml("guest", daemon.dir, http).replace(
      "<emulator>/usr/bin/qemu-system-x86_64</emulator>",
      `<emulator>${emulator}</emulator>`,
    );
    daemon.virsh(uri, `define ${daemon.writeFile("guest.xml", xml)}`);
    relay = new HoldingRelay(join(daemon.dir, "relay.sock"), daemon.socket);
    await relay.listen();
    jitsuUri = `qemu+unix:///session?socket=${relay.path}`;
    cli = startCli([
      ...["-x", "libvirt", "-c", jitsuUri, "-l", String(dns), "-f", "0.0.0.0"],
      ...["-t", String(TTL_S), "--reaper-interval", "1", "-d", "0", "-m", "destroy"],
      ...["--start-timeout", String(START_TIMEOUT_S), "--state-dir", dir.path, "--log-level", "debug"],
      `dns=${NAME},name=guest,ip=127.0.0.1,ready=http://127.0.0.1:${http}/`,
    ]);
    await cli.waitFor(/Starting server on 127\.0\.0\.1:\d+/, 30_000);
  });

  after(async () => {
    await cli?.stop();
    await relay?.close();
    await daemon.destroy(); // also kills the QEMU processes it left (their command lines name its dir)
    await dir?.remove();
  });

  it("killed after it started the domain, before jitsu had the reply: SERVFAIL in time, then the same QEMU is adopted", async () => {
    assert.equal(state(), "shut off");
    const log = mark();
    const created = relay.holdRepliesAfterCreate();
    const query = bootQuery();
    await created;
    // The daemon runs the guest (its status XML says so: what a new daemon reconnects from)...
    await until("libvirtd ran the guest", 120_000, () => /<domstatus state='running'/.test(statusXml()));
    const [pid, ...others] = guestQemus(daemon.dir);
    assert.ok(pid !== undefined && others.length === 0, `one QEMU: ${guestQemus(daemon.dir).join(", ")}`);
    // ...and dies before jitsu has the answer to its create call.
    await daemon.kill();
    await servfailNamed(await query, log, jitsuUri);
    assert.ok(pid !== undefined && existsSync(`/proc/${pid}`), "QEMU outlives the daemon");

    await daemon.start();
    const back = await bootQuery();
    assert.equal(back.status, "NOERROR", `after the restart: ${back.status}\n${log()}`);
    assert.equal(back.data, "127.0.0.1");
    // Adopted by the re-read after the reconnect or by the query's own state read, the domain
    // is answered only once its ready= probe passed (an event's adoption runs the same
    // readiness as a query's): the guest serves at the first try.
    assert.match(await guestPage(http, 0), /jitsu test guest/);
    assert.deepEqual(guestQemus(daemon.dir), [pid], "the same QEMU process, and only it");
    assert.deepEqual(launches(), [pid], "QEMU was launched once");
    assert.equal(state(), "running");
    // Adopted by the next query's state read, or first by the re-read after the reconnect.
    assert.match(log(), /VM 'guest' (is already running|was started behind our back); adopting it/);
    assert.equal((log().match(/Starting VM 'guest'/g) ?? []).length, 1, log());
    assert.match(log(), /libvirt: reconnected to qemu\+unix:/);
  });

  it("killed while jitsu is idle with the guest ready: answered meanwhile and after, reconnected, reaped on schedule", async () => {
    const log = mark();
    const [pid] = guestQemus(daemon.dir);
    assert.ok(pid !== undefined);
    assert.equal((await timedDig(dns, NAME)).data, "127.0.0.1");
    await daemon.kill();
    await cli!.waitFor(/libvirt: lost the connection to qemu\+unix:\S+ \(.*\); reconnecting/, 10_000);
    // Answered while the daemon is down (it is started again only after these): from memory.
    // A query that waited for the daemon would get no answer within dig's 10 s, or SERVFAIL.
    for (let i = 0; i < 3; i++) {
      const warm = await timedDig(dns, NAME);
      assert.equal(warm.data, "127.0.0.1", "answered from memory while libvirtd is down");
      await new Promise((r) => setTimeout(r, 300));
    }
    await daemon.start();
    await cli!.waitFor(/libvirt: reconnected to qemu\+unix:/, 15_000);
    // jitsu took the last query between these two times (dig's start and exit, which a loaded
    // machine may stretch): the bounds below are measured from the one that makes them hold.
    const asked = Date.now();
    const warm = await timedDig(dns, NAME);
    const answered = Date.now();
    assert.equal(warm.data, "127.0.0.1");
    assert.equal(state(), "running", "the new libvirtd took the running guest back");
    assert.deepEqual(guestQemus(daemon.dir), [pid]);

    // No more queries: the reaper stops the guest 2 x TTL after the last one (reaper interval 1 s).
    await until("the reaper stopped the guest", 2 * TTL_S * 1000 + 30_000, () => state() === "shut off");
    const stopped = Date.now();
    const early = (stopped - asked) / 1000;
    assert.ok(early >= 2 * TTL_S, `stopped ${early} s after the last query was sent, before 2 x TTL`);
    const late = (stopped - answered) / 1000;
    assert.ok(late <= 2 * TTL_S + 10, `stopped ${late} s after the last query was answered`);
    assert.match(log(), /Stopping VM 'guest' \(destroy\) after \d+ s idle/);
    await cli!.waitFor(/VM 'guest' stopped \(destroy\)/, 10_000);
    await until("QEMU exited", 10_000, () => !existsSync(`/proc/${pid}`));
  });

  it("killed after it launched QEMU, before the guest ran: SERVFAIL in time; the unfinished QEMU is discarded, the next query boots once", async () => {
    assert.equal(state(), "shut off");
    const log = mark();
    const before = launches().length;
    rmSync(file("go"), { force: true });
    writeFileSync(file("gate"), "");
    try {
      const query = bootQuery();
      await until("the guest's QEMU was launched", 120_000, () => launches().length > before);
      const pid = launches()[before]!;
      // libvirtd is waiting for QEMU's monitor, inside jitsu's create call.
      await daemon.kill();
      writeFileSync(file("go"), "");
      await servfailNamed(await query, log, jitsuUri);

      rmSync(file("gate"));
      await daemon.start();
      const back = await bootQuery();
      assert.equal(back.status, "NOERROR", `after the restart: ${back.status}\n${log()}`);
      assert.equal(back.data, "127.0.0.1");
      assert.match(await guestPage(http, 30_000), /jitsu test guest/);
      const now = launches().slice(before);
      assert.equal(now.length, 2, `launched ${now.join(", ")}: the discarded one, then one boot`);
      assert.equal(now[0], pid);
      assert.ok(!existsSync(`/proc/${pid}`), "the unfinished QEMU is gone");
      assert.deepEqual(guestQemus(daemon.dir), [now[1]], "one QEMU runs the guest");
      // jitsu waited for libvirt to settle the half-start: it never unpaused it, and booted once.
      assert.doesNotMatch(log(), /Unpausing VM 'guest'/);
      assert.equal((log().match(/Starting VM 'guest'/g) ?? []).length, 2, log());
      assert.equal((log().match(/VM 'guest' could not be started/g) ?? []).length, 1, log());
      const overlaps = existsSync(file("overlaps")) ? readFileSync(file("overlaps"), "utf8") : "";
      assert.equal(overlaps, "", "never two QEMU processes of the guest at once");
    } finally {
      writeFileSync(file("go"), "");
      rmSync(file("gate"), { force: true });
    }
  });
});

/**
 * A SERVFAIL within the start timeout (+1 s, by dig's clock), and the log line that names the
 * backend, `uri` and the VM. jitsu writes its log lines at the end of the turn in which it
 * answered, and the test reads them from a pipe of their own: the line may come a moment after
 * dig has exited, so it is waited for (10 s).
 */
async function servfailNamed(
  res: { status: string; ms: number },
  log: () => string,
  uri: string,
): Promise<void> {
  assert.equal(res.status, "SERVFAIL", `the query got ${res.status}`);
  assert.ok(res.ms <= (START_TIMEOUT_S + 1) * 1000, `SERVFAIL after ${res.ms} ms`);
  const failed = (): string | undefined =>
    log()
      .split("\n")
      .find((l) => l.includes("VM 'guest' could not be started"));
  await until("the log line of the failed start", 10_000, () => failed() !== undefined).catch(
    () => undefined,
  );
  const line = failed();
  assert.ok(line !== undefined, log());
  assert.match(line, /libvirt/);
  assert.ok(line.includes(uri), `the URI in: ${line}`);
}

/** The guest's page, asked every half second until it answers or `withinMs` pass (then the last error). */
async function guestPage(port: number, withinMs: number): Promise<string> {
  const until = Date.now() + withinMs;
  for (;;) {
    try {
      return await httpGet(port, 5000);
    } catch (err) {
      if (Date.now() >= until) throw err;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}
