/**
 * DnsServer: UDP and TCP (RFC 7766) on one address and port. UDP is bound per
 * local address when the address is a wildcard (udp.ts); TCP connections and
 * their limits are tcp.ts's.
 *
 * Each query is decoded into a reused QueryInfo (wire.ts), then:
 *  - A/AAAA for a managed name: `summoner.request(vm)`; an array means the VM
 *    is ready and the answer is patched from prepared bytes (the hot path);
 *    a promise is awaited (SERVFAIL if it rejects); a SummonRefusedError
 *    (the client may not cause a start now) is answered REFUSED;
 *  - other types for managed names, SOA/NS at zone apexes, PTR for managed
 *    addresses: answered from the ZoneIndex, authoritatively;
 *  - anything else: forwarded, or with forwarding disabled NXDOMAIN (inside
 *    a managed zone, with its SOA) or REFUSED (outside every managed zone).
 * Access (access.ts): a query we would forward is REFUSED to a client outside
 * --allow-recursion, or without RD; a cold VM is REFUSED to a client outside
 * --allow-summon (a ready one is answered). Our own data is answered to all.
 * See README.md in this folder for the full table.
 */
import net from "node:net";
import { ListenError, SummonRefusedError, describeError } from "../errors/index.js";
import type { Logger } from "../log/index.js";
import { ClientAccess } from "./access.js";
import { DnsCounters, REFUSED } from "./counters.js";
import { LocalClientSlots, TcpConnections, type ClientSlots } from "./tcp.js";
import type { SocketKind } from "./socket-kind.js";
import { UdpListeners, type Interfaces } from "./udp.js";
import { nativeUdp } from "./native-udp.js";
import type { Forwarder } from "./forwarder/forwarder.js";
import {
  HEADER_LEN,
  appendOpt,
  hasOpt,
  QCLASS_IN,
  QTYPE,
  RCODE,
  buildAddressTemplate,
  buildReply,
  copyQueryInfo,
  decodeQuery,
  headerOnlyReply,
  nameToString,
  newQueryInfo,
  qtypeName,
  truncateRelayed,
  writeAnswer,
  type AnswerTemplate,
  type QueryInfo,
  type ReplySections,
} from "./wire.js";
import type { ManagedName, ZoneIndex } from "./zone-index.js";
import type dnsPacket from "dns-packet";

/** What the DNS layer needs from the summoner (the Summoner class satisfies it). */
export interface SummonTarget {
  /**
   * The VM's addresses: synchronously when it is ready, else a promise (rejects
   * if it cannot be made ready). `client` is the querier's address as the
   * socket gave it (admission control's --summon-rate): throws (or rejects
   * with) SummonRefusedError when that client may not cause a start now.
   */
  request(label: string, client?: string): readonly string[] | Promise<readonly string[]>;
  /**
   * The VM's addresses if it is ready now (counted as a request, as request()
   * counts it), else null: never starts it (a client outside --allow-summon).
   */
  requestIfReady(label: string): readonly string[] | null;
}

export interface DnsServerOptions {
  zone: ZoneIndex;
  summoner: SummonTarget;
  forwarder: Forwarder | null;
  log: Logger;
  ttlSeconds: number;
  /**
   * RFC 7766 §6.2.3 (default 10 s): a TCP connection is closed when no message
   * begins within this long of the last message or answer, or a message takes
   * longer than this from its first byte to its last.
   */
  tcpIdleTimeoutMs?: number;
  /** At this many open TCP connections, a new one closes the one idle longest (default 128). */
  maxTcpConnections?: number;
  /** --allow-recursion: clients whose queries may be forwarded (default: any; the CLI passes its own default). */
  allowRecursion?: ClientAccess;
  /** --allow-summon: clients whose queries may start a VM (default: any). */
  allowSummon?: ClientAccess;
  /** Open TCP connections per client address (default 8; 0: no limit). Ignored when `clientSlots` is given. */
  tcpPerClient?: number;
  /** Who counts TCP connections per client (--workers: the primary, over every worker). */
  clientSlots?: ClientSlots;
  /** With a wildcard address, how often the host's addresses are read (default 5 s). */
  interfacePollMs?: number;
  /** The host's interfaces (default os.networkInterfaces; tests substitute). */
  interfaces?: Interfaces;
  /** Where to count (default: counters of its own); the CLI makes them first, for observers that start before DNS. */
  counters?: DnsCounters;
}

type Reply = Buffer | null;

const TCP_LIMIT = 65535;
/** RFC 7766 §6.2.3: the TCP deadline (`tcpIdleTimeoutMs`) unless given. */
export const TCP_IDLE_TIMEOUT_MS = 10_000;
/** Open TCP connections at which a new one closes the one idle longest (`maxTcpConnections`) unless given. */
export const MAX_TCP_CONNECTIONS = 128;

export class DnsServer {
  readonly counters: DnsCounters;
  private zone: ZoneIndex;
  private readonly summoner: SummonTarget;
  private readonly forwarder: Forwarder | null;
  private readonly log: Logger;
  private readonly ttl: number;
  private readonly ra: boolean;
  private readonly interfacePollMs: number | undefined;
  private readonly interfaces: Interfaces | undefined;
  private readonly allowRecursion: ClientAccess;
  private readonly allowSummon: ClientAccess;
  /** Reused for every query: the hot path allocates nothing but the reply. */
  private readonly q: QueryInfo = newQueryInfo();
  private udp: UdpListeners | null = null;
  private tcp: net.Server[] = [];
  private readonly connections: TcpConnections;
  /** Async answers not yet made (a summon or a forward in flight), and who waits for none to be left. */
  private pending = 0;
  private drained: (() => void) | null = null;
  private drainedWait: Promise<void> | null = null;
  private closing = false;
  private boundPort = 0;

  constructor(opts: DnsServerOptions) {
    this.counters = opts.counters ?? new DnsCounters();
    this.zone = opts.zone;
    this.summoner = opts.summoner;
    this.forwarder = opts.forwarder;
    if (opts.forwarder !== null) {
      opts.forwarder.onCoalesced = () => void this.counters.forwardCoalesced++;
      opts.forwarder.onMismatched = () => void this.counters.forwardMismatched++;
    }
    this.log = opts.log;
    this.ttl = opts.ttlSeconds;
    this.ra = opts.forwarder !== null;
    this.interfacePollMs = opts.interfacePollMs;
    this.interfaces = opts.interfaces;
    this.connections = new TcpConnections({
      idleTimeoutMs: opts.tcpIdleTimeoutMs ?? TCP_IDLE_TIMEOUT_MS,
      maxConnections: opts.maxTcpConnections ?? MAX_TCP_CONNECTIONS,
      slots: opts.clientSlots ?? new LocalClientSlots(opts.tcpPerClient ?? 8),
      counters: this.counters,
      log: opts.log,
      answer: (msg, client) => this.safeHandle(msg, true, client),
    });
    this.allowRecursion = opts.allowRecursion ?? new ClientAccess(["any"]);
    this.allowSummon = opts.allowSummon ?? new ClientAccess(["any"]);
  }

  /** The port actually bound (useful after `listen(host, 0)`). */
  get port(): number {
    return this.boundPort;
  }

  /**
   * Binds UDP, then TCP on the same port. With port 0, UDP picks it and TCP follows.
   * A wildcard (0.0.0.0, ::) binds UDP on each of the host's addresses (udp.ts:
   * each answer leaves from the address its query was sent to) and follows them
   * as they come and go; TCP keeps one wildcard listener: a connection always
   * answers from its own local address, and a new address is served at once.
   * `shared` (a --workers worker): TCP listens through node:cluster's shared handle
   * instead of exclusively, and the "Starting server" line is left to the primary.
   */
  async listen(host: string, port: number, options: { shared?: boolean } = {}): Promise<void> {
    const shared = options.shared === true;
    let lastErr: unknown;
    for (let attempt = 0; attempt < (port === 0 ? 10 : 1); attempt++) {
      const udp = new UdpListeners({
        host,
        answer: this.answerUdp,
        onSendFailed: this.sendFailed,
        // A --workers worker keeps dgram: node:cluster hands it the primary's sockets.
        io: shared ? null : nativeUdp(),
        log: this.log,
        announce: !shared,
        pollMs: this.interfacePollMs,
        interfaces: this.interfaces,
      });
      const actual = await udp.bind(port);
      const tcp = net.createServer((conn) => this.connections.accept(conn));
      try {
        await new Promise<void>((resolve, reject) => {
          tcp.once("error", reject);
          tcp.listen({ port: actual, host, exclusive: !shared }, () => {
            tcp.off("error", reject);
            resolve();
          });
        });
      } catch (err) {
        await udp.close();
        lastErr = err;
        continue; // with port 0, TCP's port was taken: pick another
      }
      tcp.on("error", (err) => this.log.error(`DNS TCP server error: ${describeError(err)}`));
      this.udp = udp;
      this.tcp = [tcp];
      this.boundPort = actual;
      // Logged once both sockets are bound, so whoever waits for this line can query at once.
      if (!shared) this.log.info(`Starting server on ${host}:${actual}...`);
      return;
    }
    throw ListenError.of("TCP", host, port, lastErr);
  }

  /**
   * Socket activation: serves on the sockets systemd bound (jitsu.socket) and
   * passed as descriptors, each UDP or TCP as `socketKind` found it; nothing
   * is bound by us. Logs "Starting server on ..." with each address.
   */
  async adopt(sockets: readonly { fd: number; kind: SocketKind }[]): Promise<void> {
    const udpFds = sockets.filter((s) => s.kind === "udp4" || s.kind === "udp6");
    const tcpFds = sockets.filter((s) => s.kind === "tcp4" || s.kind === "tcp6");
    const udp = new UdpListeners({
      host: "0.0.0.0",
      answer: this.answerUdp,
      onSendFailed: this.sendFailed,
      io: nativeUdp(),
      log: this.log,
      announce: true,
    });
    const tcps: net.Server[] = [];
    try {
      await udp.adopt(udpFds.map((s) => ({ fd: s.fd, type: s.kind as "udp4" | "udp6" })));
      for (const { fd } of tcpFds) {
        const tcp = net.createServer((conn) => this.connections.accept(conn));
        await new Promise<void>((resolve, reject) => {
          tcp.once("error", reject);
          tcp.listen({ fd }, () => {
            tcp.off("error", reject);
            resolve();
          });
        });
        tcp.on("error", (err) => this.log.error(`DNS TCP server error: ${describeError(err)}`));
        tcps.push(tcp);
      }
    } catch (err) {
      await udp.close();
      for (const tcp of tcps) tcp.close();
      throw new ListenError(`cannot serve DNS on the sockets systemd passed: ${describeError(err)}`, err);
    }
    this.udp = udp;
    this.tcp = tcps;
    const where: string[] = [];
    for (const a of udp.addresses) where.push(`UDP ${a.includes(":") ? `[${a}]` : a}:${udp.boundPort}`);
    for (const tcp of tcps) {
      const a = tcp.address() as net.AddressInfo;
      where.push(`TCP ${a.address.includes(":") ? `[${a.address}]` : a.address}:${a.port}`);
      if (this.boundPort === 0) this.boundPort = a.port;
    }
    if (udp.boundPort !== 0) this.boundPort = udp.boundPort;
    this.log.info(`Starting server on the sockets systemd passed (${where.join(", ")})...`);
  }

  /** The addresses UDP is bound to (one, or with a wildcard each of the host's). */
  get udpAddresses(): string[] {
    return this.udp?.addresses ?? [];
  }

  /** How DNS over UDP is read and written ("native": the batched addon; "dgram": Node's), once listening. */
  get udpIo(): "native" | "dgram" | null {
    return this.udp?.io ?? null;
  }

  /** Bound to a wildcard: reads the host's addresses now (SIGHUP) instead of at the next poll. */
  refreshAddresses(): Promise<void> {
    return this.udp?.refresh() ?? Promise.resolve();
  }

  /** Swaps the zone (config reload). Queries in flight finish with the zone they started with. */
  setZone(zone: ZoneIndex): void {
    this.zone = zone;
  }

  /** Stops accepting queries, answers those in flight, then closes the sockets. */
  async close(): Promise<void> {
    this.closing = true;
    this.connections.stop();
    const tcpClosed = Promise.all(
      this.tcp.map((tcp) => new Promise<void>((resolve) => tcp.close(() => resolve()))),
    );
    if (this.pending > 0)
      await (this.drainedWait ??= new Promise<void>((resolve) => (this.drained = resolve)));
    // Let the answers just produced reach their sockets, then close TCP gracefully.
    await new Promise((resolve) => setImmediate(resolve));
    await this.connections.end();
    await tcpClosed;
    await this.udp?.close();
    this.udp = null;
    this.tcp = [];
  }

  /** A UDP query (udp.ts sends the answer back, and drops those from port 0). */
  private readonly answerUdp = (msg: Buffer, client: string): Reply | Promise<Reply> =>
    this.closing ? null : this.safeHandle(msg, false, client);

  /** Answers the socket could not send (its buffer full): dropped, as the kernel would drop them. */
  private readonly sendFailed = (count: number): void => void (this.counters.dropped += count);

  /** Every handler is wrapped: a bug answers SERVFAIL (or nothing), it never crashes the server. */
  private safeHandle(msg: Buffer, tcp: boolean, client: string): Reply | Promise<Reply> {
    try {
      return this.handle(msg, tcp, client);
    } catch (err) {
      this.log.error(`DNS query handling failed: ${describeError(err)}`);
      if (msg.length < HEADER_LEN || (msg[2]! & 0x80) !== 0) return null;
      this.counters.countRcode(RCODE.SERVFAIL);
      return headerOnlyReply(msg, decodeHeaderOnly(msg), RCODE.SERVFAIL, this.ra);
    }
  }

  /**
   * The answer to `msg` once `p` settles: `onValue` or `onError` makes it. Counted
   * for close() to wait on; a bug in either handler answers SERVFAIL. One then()
   * per async answer, no Set, no catch()/finally(): a cold start's answer goes out
   * a few promise hops sooner.
   */
  private track<T>(
    p: Promise<T>,
    onValue: (value: T) => Reply,
    onError: (err: unknown) => Reply,
    msg: Buffer,
    q: QueryInfo,
    limit: number,
  ): Promise<Reply> {
    this.pending++;
    const settle = (make: () => Reply): Reply => {
      this.settled();
      try {
        return make();
      } catch (err) {
        this.log.error(`DNS query handling failed: ${describeError(err)}`);
        try {
          return this.reply(msg, q, { rcode: RCODE.SERVFAIL, aa: false, ra: this.ra }, limit);
        } catch {
          return null;
        }
      }
    };
    return p.then(
      (value) => settle(() => onValue(value)),
      (err: unknown) => settle(() => onError(err)),
    );
  }

  private settled(): void {
    if (--this.pending === 0 && this.drained !== null) {
      const drained = this.drained;
      this.drained = null;
      this.drainedWait = null;
      drained();
    }
  }

  /** Decides the answer to one packet from `client` (its address). Synchronous on the hot path. */
  handle(msg: Buffer, tcp: boolean, client: string): Reply | Promise<Reply> {
    const q = decodeQuery(msg, this.q);
    if (q.status === "short" || q.status === "response") {
      this.counters.dropped++;
      return null;
    }
    if (q.status === "formerr") {
      this.counters.malformed++;
      this.counters.countRcode(RCODE.FORMERR);
      if (this.log.isLevelEnabled("debug")) this.log.debug(`DNS FORMERR: ${q.problem}`);
      return headerOnlyReply(msg, q, RCODE.FORMERR, this.ra);
    }
    const limit = tcp ? TCP_LIMIT : q.hasOpt ? q.udpSize : 512;
    if (q.opcode !== 0) return this.reply(msg, q, { rcode: RCODE.NOTIMP, aa: false, ra: this.ra }, limit);
    if (q.qdcount !== 1) {
      this.counters.malformed++;
      return this.reply(msg, q, { rcode: RCODE.FORMERR, aa: false, ra: this.ra }, limit);
    }
    this.counters.countType(q.qtype);
    // RFC 6891 §6.1.3: we speak EDNS version 0 only.
    if (q.hasOpt && q.ednsVersion > 0) {
      return this.reply(msg, q, { rcode: RCODE.BADVERS, aa: false, ra: this.ra }, limit);
    }
    if (q.qtype === QTYPE.AXFR || q.qtype === QTYPE.IXFR) {
      return this.refuse(msg, q, REFUSED.transfer, this.ra, limit);
    }
    const zone = this.zone;
    if (q.qclass === QCLASS_IN && (q.qtype === QTYPE.A || q.qtype === QTYPE.AAAA)) {
      const entry = zone.lookupWire(msg, HEADER_LEN, q.nameEnd, q.nameHash);
      if (entry !== undefined) return this.summon(msg, q, entry, limit, client);
    }
    return this.answerSlow(msg, copyQueryInfo(q), zone, limit, client);
  }

  private summon(
    msg: Buffer,
    q: QueryInfo,
    entry: ManagedName,
    limit: number,
    client: string,
  ): Reply | Promise<Reply> {
    let r: readonly string[] | Promise<readonly string[]>;
    try {
      if (this.allowSummon.all) r = this.summoner.request(entry.vm, client);
      else {
        // A ready VM is answered to anyone; only a start needs --allow-summon.
        const ready = this.summoner.requestIfReady(entry.vm);
        if (ready !== null) r = ready;
        else if (this.allowSummon.allows(client)) r = this.summoner.request(entry.vm, client);
        else return this.refuse(msg, q, REFUSED.summon, this.ra, limit);
      }
    } catch (err) {
      return this.summonFailed(msg, q, entry, err, limit);
    }
    if (Array.isArray(r)) return this.addressAnswer(msg, q, entry, r as readonly string[], limit);
    if (entry.hold !== null) return this.holdAnswer(msg, q, entry, r as Promise<readonly string[]>, limit);
    const qc = copyQueryInfo(q);
    return this.track(
      r as Promise<readonly string[]>,
      (ips) => this.addressAnswer(msg, qc, entry, ips, limit),
      (err) => this.summonFailed(msg, qc, entry, err, limit),
      msg,
      qc,
      limit,
    );
  }

  /**
   * A VM that holds connections (src/activator) and is not ready: answered at
   * once with its hold address, while the start goes on (its failure is the
   * summoner's to log; the next query after it is answered the same way).
   */
  private holdAnswer(
    msg: Buffer,
    q: QueryInfo,
    entry: ManagedName,
    start: Promise<readonly string[]>,
    limit: number,
  ): Reply {
    start.catch(() => undefined);
    const hold = entry.hold!;
    const isA = q.qtype === QTYPE.A;
    let tmpl = isA ? entry.holdA : entry.holdAaaa;
    if (tmpl === undefined) {
      tmpl = buildAddressTemplate(hold, q.qtype, this.ttl);
      if (isA) entry.holdA = tmpl;
      else entry.holdAaaa = tmpl;
    }
    this.counters.holdAnswers++;
    return this.templateAnswer(msg, q, entry, tmpl, limit);
  }

  private summonFailed(msg: Buffer, q: QueryInfo, entry: ManagedName, err: unknown, limit: number): Reply {
    if (err instanceof SummonRefusedError) {
      // Not a failure of the VM: this client may not start it now (the summoner logged why).
      return this.refuse(msg, q, REFUSED["summon-rate"], this.ra, limit);
    }
    this.log.warn(
      { vm: entry.vm },
      `SERVFAIL for '${entry.name}' (${qtypeName(q.qtype)}): VM '${entry.vm}' is not ready: ${describeError(err)}`,
    );
    return this.reply(msg, q, { rcode: RCODE.SERVFAIL, aa: false, ra: this.ra }, limit);
  }

  /** The hot path once the addresses are known: prepared bytes, patched. */
  private addressAnswer(
    msg: Buffer,
    q: QueryInfo,
    entry: ManagedName,
    ips: readonly string[],
    limit: number,
  ): Reply {
    const isA = q.qtype === QTYPE.A;
    let tmpl = isA ? entry.a : entry.aaaa;
    if (tmpl === undefined || tmpl.source !== ips) {
      tmpl = buildAddressTemplate(ips, q.qtype, this.ttl);
      if (isA) entry.a = tmpl;
      else entry.aaaa = tmpl;
    }
    return this.templateAnswer(msg, q, entry, tmpl, limit);
  }

  private templateAnswer(
    msg: Buffer,
    q: QueryInfo,
    entry: ManagedName,
    tmpl: AnswerTemplate,
    limit: number,
  ): Reply {
    if (tmpl.count === 0) {
      // The VM has no address of this family: NODATA (RFC 2308 §2.2) with the zone's SOA.
      return this.reply(
        msg,
        q,
        { rcode: RCODE.NOERROR, aa: true, ra: this.ra, authorities: [(entry.apexOf ?? entry.zone).soa] },
        limit,
      );
    }
    const out = writeAnswer(msg, q, tmpl, this.ra, limit);
    if (out === null) {
      this.counters.truncated++;
      return this.reply(msg, q, { rcode: RCODE.NOERROR, aa: true, ra: this.ra }, 0);
    }
    this.counters.countRcode(RCODE.NOERROR);
    return out;
  }

  /** REFUSED, counted by reason; the question echoed and an OPT if the query had one (buildReply). */
  private refuse(msg: Buffer, q: QueryInfo, reason: number, ra: boolean, limit: number): Buffer {
    this.counters.countRefused(reason);
    return this.reply(msg, q, { rcode: RCODE.REFUSED, aa: false, ra }, limit);
  }

  private reply(msg: Buffer, q: QueryInfo, sections: ReplySections, limit: number): Buffer {
    const out = buildReply(msg, q, sections, limit);
    if ((out[2]! & 0x02) !== 0 && limit > 0) this.counters.truncated++;
    this.counters.countRcode(sections.rcode);
    return out;
  }

  /** Everything but A/AAAA for a managed name. `q` is the caller's own copy. */
  private answerSlow(
    msg: Buffer,
    q: QueryInfo,
    zone: ZoneIndex,
    limit: number,
    client: string,
  ): Reply | Promise<Reply> {
    const name = nameToString(msg, HEADER_LEN, q.nameEnd);
    const ra = this.ra;
    if (q.qclass !== QCLASS_IN)
      return this.forwardOr(msg, q, limit, client, { rcode: RCODE.REFUSED, aa: false, ra });
    const entry = zone.lookup(name);
    const apex = entry?.apexOf ?? zone.zone(name);
    const apexRecords: dnsPacket.Answer[] = [];
    if (apex !== undefined) {
      if (q.qtype === QTYPE.SOA || q.qtype === QTYPE.ANY) apexRecords.push(apex.soa);
      if (q.qtype === QTYPE.NS || q.qtype === QTYPE.ANY) apexRecords.push(apex.ns);
    }
    if (entry !== undefined) {
      // A managed name, not A/AAAA: answered from the zone, never summoned (ANY included, see README).
      if (apexRecords.length > 0)
        return this.reply(msg, q, { rcode: RCODE.NOERROR, aa: true, ra, answers: apexRecords }, limit);
      return this.reply(
        msg,
        q,
        { rcode: RCODE.NOERROR, aa: true, ra, authorities: [(apex ?? entry.zone).soa] },
        limit,
      );
    }
    const ptr = zone.ptr(name);
    if (ptr !== undefined) {
      const answers: dnsPacket.Answer[] =
        q.qtype === QTYPE.PTR || q.qtype === QTYPE.ANY
          ? ptr.targets.map((t) => ({ type: "PTR", name, ttl: this.ttl, class: "IN", data: t }))
          : [];
      return this.reply(msg, q, { rcode: RCODE.NOERROR, aa: true, ra, answers }, limit);
    }
    if (apex !== undefined) {
      if (apexRecords.length > 0)
        return this.reply(msg, q, { rcode: RCODE.NOERROR, aa: true, ra, answers: apexRecords }, limit);
      // Other types at an apex we do not manage may exist upstream (example.org MX).
      return this.forwardOr(msg, q, limit, client, {
        rcode: RCODE.NOERROR,
        aa: true,
        ra,
        authorities: [apex.soa],
      });
    }
    const enclosing = zone.enclosingZone(name);
    if (enclosing !== undefined) {
      return this.forwardOr(msg, q, limit, client, {
        rcode: RCODE.NXDOMAIN,
        aa: true,
        ra,
        authorities: [enclosing.soa],
      });
    }
    return this.forwardOr(msg, q, limit, client, { rcode: RCODE.REFUSED, aa: false, ra });
  }

  /**
   * Forwards when a forwarder is configured, else answers `otherwise`. Only for
   * a client in --allow-recursion that asks for recursion (RD): anyone else
   * is REFUSED, as BIND and unbound answer clients they do not recurse for.
   */
  private forwardOr(
    msg: Buffer,
    q: QueryInfo,
    limit: number,
    client: string,
    otherwise: ReplySections,
  ): Reply | Promise<Reply> {
    const forwarder = this.forwarder;
    if (forwarder === null) {
      if (otherwise.rcode === RCODE.REFUSED) this.counters.countRefused(REFUSED.forwarding_off);
      return this.reply(msg, q, otherwise, limit);
    }
    // RA clear: recursion is not available to this client.
    if (!this.allowRecursion.allows(client)) return this.refuse(msg, q, REFUSED.recursion, false, limit);
    if (!q.rd) return this.refuse(msg, q, REFUSED.norec, this.ra, limit);
    this.counters.forwarded++;
    const started = performance.now();
    return this.track(
      forwarder.forward(msg, q),
      (relayed) => {
        let reply = relayed;
        this.counters.observeForwardLatency((performance.now() - started) / 1000);
        // Echo the question exactly as asked, whatever case the upstream used.
        msg.copy(reply, HEADER_LEN, HEADER_LEN, q.nameEnd);
        // RFC 6891 §7: an OPT in every answer to a query that had one, even if the upstream left it out.
        if (q.hasOpt && !hasOpt(reply)) reply = appendOpt(reply, q);
        const out = truncateRelayed(reply, q, limit);
        if (out !== reply) this.counters.truncated++;
        this.counters.countForwarded();
        return out;
      },
      (err) => {
        this.counters.forwardFailures++;
        this.log.warn(`SERVFAIL for '${nameToString(msg, HEADER_LEN, q.nameEnd)}': ${describeError(err)}`);
        return this.reply(msg, q, { rcode: RCODE.SERVFAIL, aa: false, ra: this.ra }, limit);
      },
      msg,
      q,
      limit,
    );
  }
}

function decodeHeaderOnly(msg: Buffer): QueryInfo {
  const q = newQueryInfo();
  q.opcode = (msg[2]! >> 3) & 0x0f;
  q.rd = (msg[2]! & 0x01) !== 0;
  q.cd = (msg[3]! & 0x10) !== 0;
  return q;
}
