/**
 * A XenAPI server double: XML-RPC over HTTP(S) on 127.0.0.1, written from the
 * XenAPI reference (xapi-project/xen-api, doc "Wire Protocol for Remote API
 * Calls", and the datamodel's VM, VIF and session classes and error list).
 * It keeps users, sessions and VMs in memory and implements the calls jitsu
 * makes, with the power-state rules of xapi's VM lifecycle checks.
 *
 * Its XML-RPC codec is its own (not src/backends/xapi/xmlrpc.ts), so that a bug
 * in the client's codec cannot hide behind the same bug here.
 *
 * Run alone for a demo: node dist/test/doubles/xapi-server.js --port 8080
 *   --user root:secret --vm www --vm db:Halted [--state FILE] [--delay VM.start:2000]
 *   [--hold VM.start:2000]
 * (--state keeps the VMs, with their uuids, opaque references, power states
 * and domids, and the event counter across a restart, as xapi's database
 * does, so that a test can SIGKILL it mid-call and start it again; --delay
 * waits before a method does anything, --hold does the method's work at once
 * and holds only its answer, as a VM.start whose domain is up while xapi is
 * still busy with the call).
 */
import { randomUUID } from "node:crypto";
import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";
import { pathToFileURL } from "node:url";
import { XMLParser, XMLValidator } from "fast-xml-parser";

export type PowerState = "Halted" | "Paused" | "Running" | "Suspended";
type Value = string | number | boolean | null | Value[] | { [k: string]: Value };

export interface DoubleVmInit {
  readonly name: string;
  readonly uuid?: string;
  readonly powerState?: PowerState;
  readonly macs?: readonly string[];
  readonly isTemplate?: boolean;
  readonly isControlDomain?: boolean;
  /** Restored from a state file: the VM's opaque reference, domid and VIF references. */
  readonly ref?: string;
  readonly domid?: number;
  readonly vifRefs?: readonly string[];
}

export interface DoubleVm {
  ref: string;
  readonly uuid: string;
  name: string;
  powerState: PowerState;
  domid: number;
  readonly vifs: string[];
  isTemplate: boolean;
  isControlDomain: boolean;
}

interface DoubleVif {
  readonly ref: string;
  readonly vm: string;
  readonly device: string;
  readonly mac: string;
}

export interface XapiDoubleOptions {
  /** user -> password. */
  readonly users?: Readonly<Record<string, string>>;
  readonly vms?: readonly DoubleVmInit[];
  /** Serve HTTPS with this key and certificate (PEM). */
  readonly tls?: { readonly key: string; readonly cert: string };
  /** Act as a pool member: every call answers HOST_IS_SLAVE with this master address. */
  readonly poolMaster?: string;
  /** Loopback address to listen on (default 127.0.0.1); pool tests use 127.0.0.2 and up. */
  readonly host?: string;
  /** Milliseconds each named method waits before answering (e.g. {"VM.start": 200}). */
  readonly delays?: Readonly<Record<string, number>>;
  /** Milliseconds each named method holds its answer after doing its work. */
  readonly holds?: Readonly<Record<string, number>>;
  readonly port?: number;
  /** Restored from a state file: the last event id and the next domid handed out. */
  readonly lastEventId?: number;
  readonly nextDomid?: number;
  /** Called after every change to a VM (to persist it). */
  readonly onChange?: () => void;
}

export interface RecordedCall {
  readonly method: string;
  readonly params: Value[];
}

class Failure extends Error {
  constructor(readonly description: string[]) {
    super(description.join(" "));
  }
}

/** xapi_vm_lifecycle.ml allowed_power_states, for the operations below. */
const ALLOWED: Readonly<Record<string, readonly PowerState[]>> = {
  start: ["Halted"],
  unpause: ["Paused"],
  resume: ["Suspended"],
  clean_shutdown: ["Running"],
  pause: ["Running"],
  suspend: ["Running"],
  hard_shutdown: ["Paused", "Suspended", "Running"],
};

const ref = (): string => `OpaqueRef:${randomUUID()}`;

export class XapiServerDouble {
  readonly calls: RecordedCall[] = [];
  private readonly users: Record<string, string>;
  private readonly sessions = new Map<string, string>(); // session ref -> user
  private readonly vms = new Map<string, DoubleVm>(); // by ref
  private readonly vifs = new Map<string, DoubleVif>();
  private readonly injected: {
    method: string;
    description?: string[];
    raw?: { status: number; body: string };
  }[] = [];
  private nextDomid = 1;
  /** The id of the last event before this process (restored with --state). */
  private readonly eventBase: number;
  private poolMaster: string | undefined;
  private dropReused = 0;
  /** How many connections dropNextOnReusedConnection has dropped. */
  droppedConnections = 0;
  private readonly servedSockets = new WeakSet<object>();
  /** The event log for event.from: every change to a VM, in order. */
  private readonly events: { id: number; ref: string; operation: "add" | "mod" | "del"; snapshot: Value }[] =
    [];
  private readonly waiters = new Set<(lost: boolean) => void>();
  /** The tokens of the event.from calls waiting now. */
  private readonly waitingTokens: number[] = [];
  private server!: http.Server;
  private port = 0;

  private constructor(private readonly options: XapiDoubleOptions) {
    this.users = { ...(options.users ?? { root: "xenroot" }) };
    this.poolMaster = options.poolMaster;
    this.eventBase = options.lastEventId ?? 0;
    this.nextDomid = options.nextDomid ?? 1;
    for (const vm of options.vms ?? []) this.addVm(vm);
  }

  static async start(options: XapiDoubleOptions = {}): Promise<XapiServerDouble> {
    const double = new XapiServerDouble(options);
    const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => double.handle(req, res);
    double.server =
      options.tls !== undefined ? https.createServer(options.tls, handler) : http.createServer(handler);
    double.server.keepAliveTimeout = 5000;
    await new Promise<void>((resolve, reject) => {
      double.server.once("error", reject);
      double.server.listen(options.port ?? 0, options.host ?? "127.0.0.1", () => resolve());
    });
    double.port = (double.server.address() as AddressInfo).port;
    return double;
  }

  /** scheme://127.0.0.1:PORT */
  get url(): string {
    return `${this.options.tls !== undefined ? "https" : "http"}://${this.options.host ?? "127.0.0.1"}:${this.port}`;
  }

  /** The URL with credentials in its user info, as given to `jitsu -c`. */
  urlWith(user: string, password: string): string {
    const u = new URL(this.url);
    u.username = encodeURIComponent(user);
    u.password = encodeURIComponent(password);
    return u.toString().replace(/\/$/, "");
  }

  addVm(init: DoubleVmInit): DoubleVm {
    const power = init.powerState ?? "Halted";
    const up = power === "Running" || power === "Paused";
    const vm: DoubleVm = {
      ref: init.ref ?? ref(),
      uuid: init.uuid ?? randomUUID(),
      name: init.name,
      powerState: power,
      domid: up ? (init.domid ?? this.nextDomid++) : -1,
      vifs: [],
      isTemplate: init.isTemplate ?? false,
      isControlDomain: init.isControlDomain ?? false,
    };
    this.vms.set(vm.ref, vm);
    this.record(vm, "add");
    (init.macs ?? []).forEach((mac, i) => {
      const vif: DoubleVif = { ref: init.vifRefs?.[i] ?? ref(), vm: vm.ref, device: String(i), mac };
      this.vifs.set(vif.ref, vif);
      vm.vifs.push(vif.ref);
    });
    return vm;
  }

  /** A VM by name label or uuid (the first one, for names). */
  vm(nameOrUuid: string): DoubleVm {
    const found = [...this.vms.values()].find((v) => v.uuid === nameOrUuid || v.name === nameOrUuid);
    if (found === undefined) throw new Error(`xapi double: no VM '${nameOrUuid}'`);
    return found;
  }

  /** Changes a VM's power state behind the client's back (without an event when `silently`). */
  setPowerState(nameOrUuid: string, state: PowerState, options: { silently?: boolean } = {}): void {
    const vm = this.vm(nameOrUuid);
    vm.powerState = state;
    vm.domid = state === "Running" || state === "Paused" ? this.nextDomid++ : -1;
    if (options.silently !== true) this.record(vm, "mod");
  }

  /** Resolves when a client waits in event.from with a token past every event so far (it has seen them all). */
  async eventsDelivered(timeoutMs = 10_000): Promise<void> {
    const latest = this.events.at(-1)?.id ?? 0;
    for (let waited = 0; !this.waitingTokens.some((t) => t >= latest); waited += 10) {
      if (waited > timeoutMs) throw new Error(`xapi double: no client caught up with event ${latest}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Every event.from waiting now answers EVENTS_LOST, as when xapi drops its event queue. */
  loseEvents(): void {
    for (const wake of [...this.waiters]) wake(true);
  }

  /**
   * The next `n` requests that arrive on a kept-alive connection lose it without
   * a reply, as when the server closes an idle connection just as it is reused.
   */
  dropNextOnReusedConnection(n = 1): void {
    this.dropReused = n;
  }

  /** The port it listens on. */
  get listeningPort(): number {
    return this.port;
  }

  /** Makes this host a pool member of the master at `address` (pool failover), or the master again. */
  setPoolMaster(address: string | undefined): void {
    this.poolMaster = address;
  }

  /** Every session becomes invalid, as after a xapi restart or a session timeout. */
  invalidateSessions(): void {
    this.sessions.clear();
  }

  get sessionCount(): number {
    return this.sessions.size;
  }

  /** Gives the VM a new opaque reference; the old one answers HANDLE_INVALID. */
  replaceRef(nameOrUuid: string): void {
    const vm = this.vm(nameOrUuid);
    this.record(vm, "del");
    this.vms.delete(vm.ref);
    vm.ref = ref();
    this.vms.set(vm.ref, vm);
    this.record(vm, "add");
  }

  /** The next call of `method` answers Failure with this ErrorDescription. */
  failNext(method: string, description: string[]): void {
    this.injected.push({ method, description });
  }

  /** The next call of `method` answers exactly this HTTP status and body (for malformed replies). */
  respondRawNext(method: string, status: number, body: string): void {
    this.injected.push({ method, raw: { status, body } });
  }

  methodCalls(method: string): RecordedCall[] {
    return this.calls.filter((c) => c.method === method);
  }

  async close(): Promise<void> {
    for (const wake of [...this.waiters]) wake(false);
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  // ------------------------------------------------------------ HTTP

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    if (this.servedSockets.has(req.socket) && this.dropReused > 0) {
      this.dropReused -= 1;
      this.droppedConnections += 1;
      req.socket.destroy();
      return;
    }
    this.servedSockets.add(req.socket);
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      void this.answer(req, Buffer.concat(chunks).toString("utf8")).then(({ status, body }) => {
        res.writeHead(status, { "content-type": "text/xml", "content-length": Buffer.byteLength(body) });
        res.end(body);
      });
    });
  }

  private async answer(req: http.IncomingMessage, body: string): Promise<{ status: number; body: string }> {
    if (req.method !== "POST") return { status: 405, body: "Method Not Allowed\n" };
    let call: { method: string; params: Value[] };
    try {
      call = decodeMethodCall(body);
    } catch (err) {
      // XML-RPC spec, "Fault example"; -32700 is the usual "parse error" code.
      return { status: 200, body: encodeFault(-32700, `cannot parse methodCall: ${(err as Error).message}`) };
    }
    this.calls.push(call);
    const delay = this.options.delays?.[call.method];
    if (delay !== undefined) await new Promise((r) => setTimeout(r, delay));
    const hold = this.options.holds?.[call.method];
    if (hold !== undefined) {
      const done = await this.reply(call);
      await new Promise((r) => setTimeout(r, hold));
      return done;
    }
    return this.reply(call);
  }

  private async reply(call: { method: string; params: Value[] }): Promise<{ status: number; body: string }> {
    const i = this.injected.findIndex((x) => x.method === call.method);
    if (i >= 0) {
      const inj = this.injected.splice(i, 1)[0]!;
      if (inj.raw !== undefined) return inj.raw;
      return {
        status: 200,
        body: encodeResponse({ Status: "Failure", ErrorDescription: inj.description ?? [] }),
      };
    }
    try {
      const value =
        call.method === "event.from" && this.poolMaster === undefined
          ? await this.eventFrom(call.params)
          : this.dispatch(call.method, call.params);
      return { status: 200, body: encodeResponse({ Status: "Success", Value: value }) };
    } catch (err) {
      if (!(err instanceof Failure)) throw err;
      return { status: 200, body: encodeResponse({ Status: "Failure", ErrorDescription: err.description }) };
    }
  }

  // ------------------------------------------------------------ the API

  private dispatch(method: string, params: Value[]): Value {
    // HOST_IS_SLAVE ["Master IP address"]: a pool member takes no regular API calls.
    if (this.poolMaster !== undefined) throw new Failure(["HOST_IS_SLAVE", this.poolMaster]);
    const arity = (n: number): void => {
      // MESSAGE_PARAMETER_COUNT_MISMATCH [method; expected; received]
      if (params.length !== n)
        throw new Failure(["MESSAGE_PARAMETER_COUNT_MISMATCH", method, String(n), String(params.length)]);
    };
    if (method === "session.login_with_password") {
      // (session ref) session.login_with_password(uname, pwd, version, originator); version and originator optional
      if (params.length < 2 || params.length > 4) {
        throw new Failure(["MESSAGE_PARAMETER_COUNT_MISMATCH", method, "4", String(params.length)]);
      }
      const [user, pwd] = params.map((p) => str(p, "uname"));
      // xapi answers SESSION_AUTHENTICATION_FAILED [uname; PAM message]
      if (this.users[user!] === undefined || this.users[user!] !== pwd) {
        throw new Failure(["SESSION_AUTHENTICATION_FAILED", user!, "Authentication failure"]);
      }
      const session = ref();
      this.sessions.set(session, user!);
      return session;
    }

    const session = params[0];
    if (typeof session !== "string" || !this.sessions.has(session)) {
      if (!KNOWN.has(method)) throw new Failure(["MESSAGE_METHOD_UNKNOWN", method]);
      // SESSION_INVALID [handle]
      throw new Failure(["SESSION_INVALID", typeof session === "string" ? session : ""]);
    }
    const args = params.slice(1);
    switch (method) {
      case "session.logout":
        arity(1);
        this.sessions.delete(session);
        return "";
      case "VM.get_by_uuid": {
        arity(2);
        const uuid = str(args[0], "uuid");
        const vm = [...this.vms.values()].find((v) => v.uuid === uuid);
        // UUID_INVALID [type; uuid]
        if (vm === undefined) throw new Failure(["UUID_INVALID", "VM", uuid]);
        return vm.ref;
      }
      case "VM.get_by_name_label": {
        arity(2);
        const name = str(args[0], "label");
        return [...this.vms.values()].filter((v) => v.name === name).map((v) => v.ref);
      }
      case "VM.get_uuid":
        arity(2);
        return this.vmArg(args[0]).uuid;
      case "VM.get_name_label":
        arity(2);
        return this.vmArg(args[0]).name;
      case "VM.get_power_state":
        arity(2);
        return this.vmArg(args[0]).powerState;
      case "VM.get_is_a_template":
        arity(2);
        return this.vmArg(args[0]).isTemplate;
      case "VM.get_is_control_domain":
        arity(2);
        return this.vmArg(args[0]).isControlDomain;
      case "VM.get_domid":
        arity(2);
        // int travels as a string of decimal digits
        return String(this.vmArg(args[0]).domid);
      case "VM.get_VIFs":
        arity(2);
        return [...this.vmArg(args[0]).vifs];
      case "VM.start": // VM.start(session, vm, start_paused, force)
      case "VM.resume": {
        // VM.resume(session, vm, start_paused, force)
        arity(4);
        const vm = this.vmArg(args[0]);
        const startPaused = bool(args[1], "start_paused");
        bool(args[2], "force");
        this.transition(vm, method === "VM.start" ? "start" : "resume", startPaused ? "Paused" : "Running");
        return "";
      }
      case "VM.pause":
        arity(2);
        this.transition(this.vmArg(args[0]), "pause", "Paused");
        return "";
      case "VM.unpause":
        arity(2);
        this.transition(this.vmArg(args[0]), "unpause", "Running");
        return "";
      case "VM.clean_shutdown":
        arity(2);
        this.transition(this.vmArg(args[0]), "clean_shutdown", "Halted");
        return "";
      case "VM.hard_shutdown":
        arity(2);
        this.transition(this.vmArg(args[0]), "hard_shutdown", "Halted");
        return "";
      case "VM.suspend":
        arity(2);
        this.transition(this.vmArg(args[0]), "suspend", "Suspended");
        return "";
      case "VIF.get_MAC":
        arity(2);
        return this.vifArg(args[0]).mac;
      case "VIF.get_device":
        arity(2);
        return this.vifArg(args[0]).device;
      default:
        throw new Failure(["MESSAGE_METHOD_UNKNOWN", method]);
    }
  }

  /**
   * event.from(session, classes, token, timeout) -> {events, valid_ref_counts, token}
   * (XenAPI class "event"). An empty token returns every object as an "add"
   * event; otherwise it waits up to `timeout` seconds for events after the token.
   */
  private async eventFrom(params: Value[]): Promise<Value> {
    if (params.length !== 4) {
      throw new Failure(["MESSAGE_PARAMETER_COUNT_MISMATCH", "event.from", "4", String(params.length)]);
    }
    const [session, classes, token, timeout] = params;
    if (typeof session !== "string" || !this.sessions.has(session))
      throw new Failure(["SESSION_INVALID", String(session)]);
    if (!Array.isArray(classes) || typeof timeout !== "number") {
      throw new Failure([
        "XMLRPC_UNMARSHAL_FAILURE",
        "(String set, Float)",
        JSON.stringify([classes, timeout]),
      ]);
    }
    const wantsVm = classes.some((c) => typeof c === "string" && (c.toLowerCase() === "vm" || c === "*"));
    const last = (): string => String(this.lastEventId);
    const batch = (events: Value[]): Value => ({
      events,
      valid_ref_counts: { vm: this.vms.size },
      token: last(),
    });
    if (token === "") {
      return batch(
        wantsVm ? [...this.vms.values()].map((vm) => this.event(0, vm.ref, "add", snapshotOf(vm))) : [],
      );
    }
    if (typeof token !== "string" || !/^\d+$/.test(token)) throw new Failure(["EVENTS_LOST"]);
    const after = Number(token);
    // Events before this process started are not in its log: the client must take a fresh snapshot.
    if (after < this.eventBase) throw new Failure(["EVENTS_LOST"]);
    const pending = (): Value[] =>
      wantsVm
        ? this.events.filter((e) => e.id > after).map((e) => this.event(e.id, e.ref, e.operation, e.snapshot))
        : [];
    if (pending().length === 0) {
      this.waitingTokens.push(after);
      const lost = await new Promise<boolean>((resolve) => {
        const wake = (lost: boolean): void => {
          clearTimeout(timer);
          this.waiters.delete(wake);
          resolve(lost);
        };
        const timer = setTimeout(() => wake(false), timeout * 1000);
        this.waiters.add(wake);
      }).finally(() => this.waitingTokens.splice(this.waitingTokens.indexOf(after), 1));
      if (lost) throw new Failure(["EVENTS_LOST"]);
    }
    return batch(pending());
  }

  private event(id: number, ref: string, operation: string, snapshot: Value): Value {
    return { id: String(id), timestamp: new Date().toISOString(), class: "vm", operation, ref, snapshot };
  }

  /** The id of the newest event (persisted with --state, as xapi's database generation is). */
  get lastEventId(): number {
    return this.events.at(-1)?.id ?? this.eventBase;
  }

  /** Every VM as a state file keeps it. */
  snapshot(): DoubleVmInit[] {
    return [...this.vms.values()].map((vm) => ({
      name: vm.name,
      uuid: vm.uuid,
      ref: vm.ref,
      powerState: vm.powerState,
      domid: vm.domid,
      isTemplate: vm.isTemplate,
      isControlDomain: vm.isControlDomain,
      macs: vm.vifs.map((r) => this.vifs.get(r)!.mac),
      vifRefs: [...vm.vifs],
    }));
  }

  /** The next domid this double hands out. */
  get domidCounter(): number {
    return this.nextDomid;
  }

  private record(vm: DoubleVm, operation: "add" | "mod" | "del"): void {
    this.events.push({
      id: this.lastEventId + 1,
      ref: vm.ref,
      operation,
      snapshot: snapshotOf(vm),
    });
    for (const wake of [...this.waiters]) wake(false);
    this.options.onChange?.();
  }

  private transition(vm: DoubleVm, op: string, to: PowerState): void {
    const allowed = ALLOWED[op]!;
    // VM_IS_TEMPLATE [vm; operation] comes before the power-state check only for templates.
    if (vm.isTemplate) throw new Failure(["VM_IS_TEMPLATE", vm.ref, op]);
    if (!allowed.includes(vm.powerState)) {
      // VM_BAD_POWER_STATE [vm; expected; actual], states lower-case as Record_util.power_to_string
      throw new Failure([
        "VM_BAD_POWER_STATE",
        vm.ref,
        allowed.map((s) => s.toLowerCase()).join(", "),
        vm.powerState.toLowerCase(),
      ]);
    }
    const wasUp = vm.powerState === "Running" || vm.powerState === "Paused";
    vm.powerState = to;
    if (to === "Halted" || to === "Suspended") vm.domid = -1;
    else if (!wasUp) vm.domid = this.nextDomid++;
    this.record(vm, "mod");
  }

  private vmArg(v: Value | undefined): DoubleVm {
    const r = str(v, "vm");
    const vm = this.vms.get(r);
    // HANDLE_INVALID [class; handle]
    if (vm === undefined) throw new Failure(["HANDLE_INVALID", "VM", r]);
    return vm;
  }

  private vifArg(v: Value | undefined): DoubleVif {
    const r = str(v, "vif");
    const vif = this.vifs.get(r);
    if (vif === undefined) throw new Failure(["HANDLE_INVALID", "VIF", r]);
    return vif;
  }
}

/** The VM record fields the double keeps (a subset of the XenAPI VM class's fields). */
function snapshotOf(vm: DoubleVm): Value {
  return {
    uuid: vm.uuid,
    name_label: vm.name,
    power_state: vm.powerState,
    domid: String(vm.domid),
    is_a_template: vm.isTemplate,
    is_control_domain: vm.isControlDomain,
    VIFs: [...vm.vifs],
  };
}

const KNOWN = new Set([
  "event.from",
  "session.logout",
  "VM.get_by_uuid",
  "VM.get_by_name_label",
  "VM.get_uuid",
  "VM.get_name_label",
  "VM.get_power_state",
  "VM.get_is_a_template",
  "VM.get_is_control_domain",
  "VM.get_domid",
  "VM.get_VIFs",
  "VM.start",
  "VM.resume",
  "VM.pause",
  "VM.unpause",
  "VM.clean_shutdown",
  "VM.hard_shutdown",
  "VM.suspend",
  "VIF.get_MAC",
  "VIF.get_device",
]);

// XMLRPC_UNMARSHAL_FAILURE [expected; received]
function str(v: Value | undefined, _name: string): string {
  if (typeof v !== "string")
    throw new Failure(["XMLRPC_UNMARSHAL_FAILURE", "String", JSON.stringify(v ?? null)]);
  return v;
}

function bool(v: Value | undefined, _name: string): boolean {
  if (typeof v !== "boolean")
    throw new Failure(["XMLRPC_UNMARSHAL_FAILURE", "Bool", JSON.stringify(v ?? null)]);
  return v;
}

// ------------------------------------------------------------ XML-RPC (own codec)

const xml = new XMLParser({
  ignoreAttributes: true,
  parseTagValue: false,
  trimValues: false,
  htmlEntities: true,
  isArray: (name) => ["param", "member", "value"].includes(name),
});

type Node = Record<string, unknown>;

function decodeMethodCall(body: string): { method: string; params: Value[] } {
  if (XMLValidator.validate(body) !== true) throw new Error("not well-formed XML");
  const doc = xml.parse(body) as Node;
  const call = doc["methodCall"] as Node | undefined;
  if (call === undefined || typeof call["methodName"] !== "string")
    throw new Error("no methodCall/methodName");
  const params = ((call["params"] as Node | undefined)?.["param"] as Node[] | undefined) ?? [];
  return {
    method: call["methodName"].trim(),
    params: params.map((p) => decodeValue(((p["value"] as Node[] | undefined) ?? [])[0])),
  };
}

function decodeValue(v: unknown): Value {
  if (typeof v === "string") return v; // untyped <value>: string
  if (v === undefined || v === "") return "";
  const node = v as Node;
  const [type, content] = Object.entries(node).find(([k]) => k !== "#text") ?? [
    "string",
    node["#text"] ?? "",
  ];
  switch (type) {
    case "string":
      return typeof content === "string" ? content : "";
    case "int":
    case "i4":
      return Number.parseInt(String(content), 10);
    case "double":
      return Number(content);
    case "boolean":
      return String(content).trim() === "1";
    case "nil":
      return null;
    case "array": {
      const data = (content as Node)["data"];
      const values =
        (typeof data === "object" && data !== null ? ((data as Node)["value"] as unknown[]) : []) ?? [];
      return values.map(decodeValue);
    }
    case "struct": {
      const out: { [k: string]: Value } = {};
      for (const m of ((content as Node)["member"] as Node[] | undefined) ?? []) {
        out[String(m["name"])] = decodeValue(((m["value"] as unknown[]) ?? [])[0]);
      }
      return out;
    }
    default:
      throw new Error(`unsupported value type <${type}>`);
  }
}

const esc = (s: string): string => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

function encodeValue(v: Value): string {
  if (v === null) return "<value><nil/></value>";
  if (typeof v === "string") return `<value>${esc(v)}</value>`; // untyped, as xapi sends strings
  if (typeof v === "boolean") return `<value><boolean>${v ? 1 : 0}</boolean></value>`;
  if (typeof v === "number")
    return Number.isInteger(v) ? `<value><int>${v}</int></value>` : `<value><double>${v}</double></value>`;
  if (Array.isArray(v)) return `<value><array><data>${v.map(encodeValue).join("")}</data></array></value>`;
  const members = Object.entries(v).map(
    ([k, m]) => `<member><name>${esc(k)}</name>${encodeValue(m)}</member>`,
  );
  return `<value><struct>${members.join("")}</struct></value>`;
}

function encodeResponse(v: Value): string {
  return `<?xml version="1.0"?>\n<methodResponse><params><param>${encodeValue(v)}</param></params></methodResponse>\n`;
}

function encodeFault(code: number, message: string): string {
  const fault = encodeValue({ faultCode: code, faultString: message });
  return `<?xml version="1.0"?>\n<methodResponse><fault>${fault}</fault></methodResponse>\n`;
}

// ------------------------------------------------------------ standalone

/** What --state FILE holds. */
interface SavedState {
  readonly vms: DoubleVmInit[];
  readonly lastEventId: number;
  readonly nextDomid: number;
}

async function main(argv: string[]): Promise<void> {
  const users: Record<string, string> = {};
  const vms: DoubleVmInit[] = [];
  const delays: Record<string, number> = {};
  const holds: Record<string, number> = {};
  let stateFile: string | undefined;
  let port = 0;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const next = argv[++i] ?? "";
    if (arg === "--port") port = Number(next);
    else if (arg === "--state") stateFile = next;
    else if (arg === "--delay" || arg === "--hold") {
      const [method, ms] = next.split(":");
      (arg === "--delay" ? delays : holds)[method!] = Number(ms);
    } else if (arg === "--user") {
      const [u, p] = next.split(":");
      users[u!] = p ?? "";
    } else if (arg === "--vm") {
      const [name, state] = next.split(":");
      vms.push({
        name: name!,
        powerState: (state as PowerState | undefined) ?? "Halted",
        macs: ["00:16:3e:00:00:01"],
      });
    } else
      throw new Error(
        `usage: xapi-server.js [--port N] [--user USER:PASSWORD]... [--vm NAME[:Halted|Running|Paused|Suspended]]... [--state FILE] [--delay METHOD:MS]... [--hold METHOD:MS]...`,
      );
  }
  // --state: the VMs (uuids, references, power states, domids) and the event
  // counter survive a kill and restart, as xapi's database does (a test kills
  // this process mid-call). A VM named on the command line but not in the file is added.
  const saved: SavedState | undefined =
    stateFile !== undefined && existsSync(stateFile)
      ? (JSON.parse(readFileSync(stateFile, "utf8")) as SavedState)
      : undefined;
  const restored = [...(saved?.vms ?? [])];
  for (const vm of vms) if (!restored.some((r) => r.name === vm.name)) restored.push(vm);
  let double: XapiServerDouble | undefined = undefined;
  const save = (): void => {
    if (stateFile === undefined || double === undefined) return;
    const now: SavedState = {
      vms: double.snapshot(),
      lastEventId: double.lastEventId,
      nextDomid: double.domidCounter,
    };
    writeFileSync(`${stateFile}.tmp`, JSON.stringify(now));
    renameSync(`${stateFile}.tmp`, stateFile);
  };
  double = await XapiServerDouble.start({
    port,
    users: Object.keys(users).length > 0 ? users : undefined,
    vms: restored,
    delays,
    holds,
    lastEventId: saved?.lastEventId,
    nextDomid: saved?.nextDomid,
    onChange: save,
  });
  save();
  for (const vm of restored) {
    const v = double.vm(vm.name);
    console.log(`VM ${v.name} uuid=${v.uuid} ${v.powerState}`);
  }
  console.log(`XenAPI double listening on ${double.url}`);
  // Print each power-state change, so a demo shows what jitsu did.
  const running = double;
  // Each operation that changes something, so that a test sees what was asked of this process.
  let printed = 0;
  setInterval(() => {
    for (; printed < running.calls.length; printed++) {
      const method = running.calls[printed]!.method;
      if (!/^(VM\.get_|VIF\.get_|event\.|session\.)/.test(method)) console.log(`call ${method}`);
    }
  }, 20);
  const last = new Map(restored.map((vm) => [vm.name, running.vm(vm.name).powerState]));
  setInterval(() => {
    for (const vm of restored) {
      const now = running.vm(vm.name).powerState;
      if (last.get(vm.name) !== now) console.log(`VM ${vm.name}: ${last.get(vm.name)} -> ${now}`);
      last.set(vm.name, now);
    }
  }, 20);
  process.on("SIGINT", () => void running.close().then(() => process.exit(0)));
  process.on("SIGTERM", () => void running.close().then(() => process.exit(0)));
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    console.error((err as Error).message);
    process.exit(1);
  });
}
