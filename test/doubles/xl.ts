#!/usr/bin/env node
/**
 * An `xl` double (xl(1), Xen 4.17) for tests: an executable put first on PATH
 * (or given with --xl) that keeps its domains in a JSON file under
 * $XL_DOUBLE_STATE and speaks to the xenstored double at $XENSTORED_PATH (the
 * variable libxenstore reads), as the real xl talks to xenstored.
 *
 * It checks config files as xl would (xl.cfg(5): name, kernel and memory;
 * disks per xl-disk-configuration(5): vdev required, target last, format and
 * access from the documented sets, target must exist; vifs per
 * xl-network-configuration(5)), and prints what xl prints: the `xl list` table
 * (tools/xl/xl_info.c list_domains), `xl list -l` JSON ({domid, config:
 * libxl_domain_config} with c_info/b_info/disks/nics), `xl network-list`
 * (xl_nic.c), and the real error messages (find_domain's "is an invalid domain
 * identifier", main_domid's "Can't get domid ..."). `faults.json` in the state
 * dir makes a subcommand fail, as xl does when libxl fails.
 */
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  realpathSync,
  renameSync,
  rmdirSync,
  writeFileSync,
} from "node:fs";
import { pathToFileURL } from "node:url";
import { randomBytes, randomUUID } from "node:crypto";
import { join } from "node:path";
import { T, writePayload, xsRequests } from "./xenstored-wire.js";

export interface XlDomain {
  domid: number;
  name: string;
  uuid: string;
  /** "running" | "paused" */
  state: string;
  memoryMiB: number;
  kernel: string;
  cmdline: string | undefined;
  disks: { target: string; vdev: string; format: string; access: string }[];
  vifs: { bridge: string | undefined; script: string | undefined; mac: string }[];
  /** The config file's text, as given to create. */
  configText: string;
  /** The bytes at /local/domain/<domid>/rumprun/cfg when `xl unpause` ran (base64), null if absent, undefined if never unpaused. */
  rumprunAtUnpause?: string | null;
}

export interface XlState {
  nextDomid: number;
  domains: XlDomain[];
  /** Every invocation, in order. */
  calls: string[][];
}

/** The magic at the start of an xl save file (tools/xl/xl_saverestore.c: savefileheader_magic). */
const SAVE_MAGIC = "Xen saved domain, xl format\n \0 \r";

class XlExit extends Error {
  constructor(
    readonly status: number,
    readonly stderr: string,
  ) {
    super(stderr);
  }
}

function stateDir(): string {
  const dir = process.env.XL_DOUBLE_STATE;
  if (dir === undefined || dir === "") throw new XlExit(1, "xl double: XL_DOUBLE_STATE is not set\n");
  mkdirSync(dir, { recursive: true });
  return dir;
}

function load(dir: string): XlState {
  const file = join(dir, "domains.json");
  if (!existsSync(file)) return { nextDomid: 1, domains: [], calls: [] };
  return JSON.parse(readFileSync(file, "utf8")) as XlState;
}

/** Written to a temporary file and renamed, so readers (the test) never see half a file and need no lock. */
function save(dir: string, state: XlState): void {
  const tmp = join(dir, `domains.json.${process.pid}`);
  writeFileSync(tmp, JSON.stringify(state, null, 2));
  renameSync(tmp, join(dir, "domains.json"));
}

/** find_domain (tools/xl/xl_utils.c): a domain id or a name. */
function findDomain(state: XlState, p: string | undefined): XlDomain {
  const d = state.domains.find((x) => x.name === p || String(x.domid) === p);
  if (d === undefined || p === undefined)
    throw new XlExit(1, `${p ?? ""} is an invalid domain identifier (rc=-6)\n`);
  return d;
}

function fault(dir: string, cmd: string): void {
  const file = join(dir, "faults.json");
  if (!existsSync(file)) return;
  const faults = JSON.parse(readFileSync(file, "utf8")) as Record<string, string>;
  const msg = faults[cmd];
  if (msg !== undefined) throw new XlExit(3, msg.endsWith("\n") ? msg : `${msg}\n`);
}

// ---- xl.cfg(5) parsing: `KEY = VALUE`, VALUE a "string", 'string', number or [ list ] ----

type CfgValue = string | number | string[];

function parseCfg(text: string, file: string): Map<string, CfgValue> {
  const out = new Map<string, CfgValue>();
  let i = 0;
  let line = 1;
  const err = (what: string): never => {
    throw new XlExit(
      1,
      `Parsing config from ${file}\n${file}:${line}: config parsing error near \`${what}': syntax error\nFailed to parse config: Invalid argument\n`,
    );
  };
  const skip = (): void => {
    for (;;) {
      const c = text[i];
      if (c === "#") while (i < text.length && text[i] !== "\n") i++;
      else if (c === "\n") {
        line++;
        i++;
      } else if (c === " " || c === "\t" || c === "\r" || c === ";") i++;
      else return;
    }
  };
  const str = (): string => {
    const q = text[i++];
    let s = "";
    while (i < text.length && text[i] !== q) {
      if (text[i] === "\n") err(s);
      s += text[i++];
    }
    if (i >= text.length) err(s);
    i++;
    return s;
  };
  const value = (): CfgValue => {
    skip();
    const c = text[i];
    if (c === '"' || c === "'") return str();
    if (c === "[") {
      i++;
      const list: string[] = [];
      for (;;) {
        skip();
        if (text[i] === "]") {
          i++;
          return list;
        }
        if (text[i] !== '"' && text[i] !== "'") err(text.slice(i, i + 10));
        list.push(str());
        skip();
        if (text[i] === ",") i++;
      }
    }
    const m = /^-?\d+/.exec(text.slice(i));
    if (m === null) return err(text.slice(i, i + 10));
    i += m[0].length;
    return Number(m[0]);
  };
  for (;;) {
    skip();
    if (i >= text.length) break;
    const m = /^[A-Za-z_][A-Za-z0-9_.]*/.exec(text.slice(i));
    if (m === null) err(text.slice(i, i + 10));
    i += m![0].length;
    skip();
    if (text[i] !== "=") err(m![0]);
    i++;
    out.set(m![0], value());
  }
  return out;
}

/** xl-disk-configuration(5): positional or KEY=VALUE parameters, target last. */
function parseDisk(spec: string): XlDomain["disks"][number] {
  const bad = (why: string): never => {
    throw new XlExit(
      1,
      `xl: error with disk configuration: ${why} in '${spec}'\nParsing config failed: Invalid argument\n`,
    );
  };
  let rest = spec;
  const fields: Record<string, string> = {};
  while (rest.length > 0) {
    const comma = rest.indexOf(",");
    const part = (comma < 0 ? rest : rest.slice(0, comma)).trim();
    if (part.startsWith("target=")) {
      // "target=... Special syntax: ... must be specified last; may contain commas"
      fields.target = rest.trim().slice("target=".length);
      break;
    }
    const eq = part.indexOf("=");
    if (eq < 0) bad(`unknown value '${part}' (jitsu's double accepts KEY=VALUE only)`);
    const key = part.slice(0, eq);
    const val = part.slice(eq + 1);
    if (!["format", "vdev", "access", "devtype", "backendtype", "script"].includes(key))
      bad(`unknown parameter '${key}'`);
    fields[key] = val;
    rest = comma < 0 ? "" : rest.slice(comma + 1);
  }
  if (fields.vdev === undefined || fields.vdev === "") bad("no vdev specified");
  const format = fields.format ?? "raw";
  if (!["raw", "qcow", "qcow2", "vhd", "qed"].includes(format)) bad(`invalid format '${format}'`);
  const access = fields.access ?? "rw";
  if (!["ro", "r", "rw", "w"].includes(access)) bad(`invalid access '${access}'`);
  if (fields.target === undefined || fields.target === "") bad("no target specified");
  if (!existsSync(fields.target!)) {
    throw new XlExit(
      3,
      `libxl: error: libxl_device.c:360:libxl__device_disk_set_backend: Disk vdev=${fields.vdev} failed to stat: ${fields.target}: No such file or directory\n`,
    );
  }
  return { target: fields.target!, vdev: fields.vdev!, format, access };
}

/** xl-network-configuration(5): comma-separated KEY=VALUE settings. */
function parseVif(spec: string): {
  bridge: string | undefined;
  script: string | undefined;
  mac: string | undefined;
} {
  const out: Record<string, string> = {};
  for (const part of spec.split(",").map((p) => p.trim())) {
    if (part === "") continue;
    const eq = part.indexOf("=");
    const key = eq < 0 ? part : part.slice(0, eq);
    if (
      ![
        "mac",
        "bridge",
        "ip",
        "script",
        "type",
        "vifname",
        "backend",
        "model",
        "gatewaydev",
        "rate",
        "mtu",
      ].includes(key) ||
      eq < 0
    ) {
      throw new XlExit(1, `Invalid parameter: ${part}\n`);
    }
    out[key] = part.slice(eq + 1);
  }
  return { bridge: out.bridge, script: out.script, mac: out.mac };
}

function randomMac(): string {
  // Xen's OUI 00:16:3e, as libxl picks when none is given.
  return ["00", "16", "3e", ...[...randomBytes(3)].map((b) => b.toString(16).padStart(2, "0"))].join(":");
}

async function xsWriteDomain(d: XlDomain): Promise<void> {
  const socket = process.env.XENSTORED_PATH;
  if (socket === undefined || socket === "")
    throw new XlExit(
      3,
      "libxl: error: libxl.c: cannot open libxenstore connection: No such file or directory\n",
    );
  const base = `/local/domain/${d.domid}`;
  const writes: [string, string][] = [
    [`${base}/name`, d.name],
    [`${base}/domid`, String(d.domid)],
    [`${base}/vm`, `/vm/${d.uuid}`],
    ...d.vifs.map((v, i): [string, string] => [`${base}/device/vif/${i}/mac`, v.mac]),
  ];
  const replies = await xsRequests(
    socket,
    writes.map(([p, v]) => ({ type: T.WRITE, payload: writePayload(p, v) })),
  );
  const failed = replies.find((r) => r.type === T.ERROR);
  if (failed !== undefined)
    throw new XlExit(
      3,
      `libxl: error: xenstore write failed: ${failed.payload.toString().replace(/\0/g, "")}\n`,
    );
}

async function xsRemoveDomain(d: XlDomain): Promise<void> {
  const socket = process.env.XENSTORED_PATH;
  if (socket === undefined || socket === "") return;
  await xsRequests(socket, [{ type: T.RM, payload: Buffer.from(`/local/domain/${d.domid}\0`) }]);
}

async function xsRead(path: string): Promise<Buffer | null> {
  const socket = process.env.XENSTORED_PATH;
  if (socket === undefined || socket === "") return null;
  const [reply] = await xsRequests(socket, [{ type: T.READ, payload: Buffer.from(`${path}\0`) }]);
  return reply === undefined || reply.type === T.ERROR ? null : Buffer.from(reply.payload);
}

function listTable(state: XlState): string {
  const row = (name: string, id: number, mem: number, vcpus: number, st: string): string =>
    `${name.padEnd(40)} ${String(id).padStart(5)} ${String(mem).padStart(5)} ${String(vcpus).padStart(5)}     ${st}  ${"0.1".padStart(8)}\n`;
  let out = "Name                                        ID   Mem VCPUs\tState\tTime(s)\n";
  out += row("Domain-0", 0, 2048, 2, "r-----");
  for (const d of state.domains)
    out += row(d.name, d.domid, d.memoryMiB, 1, d.state === "paused" ? "--p---" : "-b----");
  return out;
}

/** The shape of libxl_domain_config_gen_json, as `xl list -l` prints it (yajl, 4-space indent). */
function longJson(state: XlState): string {
  const entries = state.domains.map((d) => ({
    domid: d.domid,
    config: {
      c_info: { type: "pv", name: d.name, uuid: d.uuid, run_hotplug_scripts: "True" },
      b_info: {
        max_vcpus: 1,
        max_memkb: d.memoryMiB * 1024,
        target_memkb: d.memoryMiB * 1024,
        "type.pv": { kernel: d.kernel, ...(d.cmdline === undefined ? {} : { cmdline: d.cmdline }) },
      },
      disks: d.disks.map((x) => ({
        pdev_path: x.target,
        vdev: x.vdev,
        backend: "qdisk",
        format: x.format,
        readwrite: x.access.startsWith("r") && x.access !== "rw" ? 0 : 1,
      })),
      nics: d.vifs.map((v, i) => ({
        devid: i,
        mac: v.mac,
        ...(v.bridge === undefined ? {} : { bridge: v.bridge }),
        ...(v.script === undefined ? {} : { script: v.script }),
        nictype: "vif",
      })),
      on_poweroff: "destroy",
      on_reboot: "restart",
      on_crash: "destroy",
    },
  }));
  return `${JSON.stringify(entries, null, 4)}\n`;
}

async function create(state: XlState, args: string[]): Promise<{ out: string; err: string }> {
  const paused = args.includes("-p");
  const files = args.filter((a) => !a.startsWith("-"));
  const file = files[0];
  if (file === undefined) throw new XlExit(1, "xl double: create without a config file is not supported\n");
  if (!file.startsWith("/"))
    throw new XlExit(1, `xl double: config file '${file}' is not an absolute path\n`);
  if (!existsSync(file))
    throw new XlExit(
      1,
      `Parsing config from ${file}\nFailed to read config file: ${file}: No such file or directory\n`,
    );
  const text = readFileSync(file, "utf8");
  const cfg = parseCfg(text, file);
  const err = `Parsing config from ${file}\n`;
  const name = cfg.get("name");
  if (typeof name !== "string" || name === "") throw new XlExit(1, `${err}Domain name must be specified.\n`);
  const type = cfg.get("type") ?? "pv";
  if (type !== "pv")
    throw new XlExit(1, `${err}xl double: only type "pv" is supported, got '${String(type)}'\n`);
  const kernel = cfg.get("kernel");
  if (typeof kernel !== "string")
    throw new XlExit(3, `${err}libxl: error: libxl_create.c: no kernel specified for a PV domain\n`);
  const memory = cfg.get("memory");
  if (typeof memory !== "number" || memory <= 0)
    throw new XlExit(
      1,
      `${err}xl double: memory must be a whole number of MiB, got ${JSON.stringify(memory)}\n`,
    );
  const disksCfg = cfg.get("disk") ?? [];
  const vifsCfg = cfg.get("vif") ?? [];
  if (!Array.isArray(disksCfg) || !Array.isArray(vifsCfg))
    throw new XlExit(1, `${err}disk and vif must be lists\n`);
  const disks = disksCfg.map(parseDisk);
  const vifs = vifsCfg
    .map(parseVif)
    .map((v) => ({ bridge: v.bridge, script: v.script, mac: v.mac ?? randomMac() }));
  if (state.domains.some((d) => d.name === name)) {
    throw new XlExit(
      3,
      `${err}libxl: error: libxl_create.c:1284:domcreate_launch_dm: Domain with name "${name}" already exists.\n`,
    );
  }
  if (!existsSync(kernel)) {
    throw new XlExit(
      3,
      `${err}xc: error: panic: xg_dom_core.c:207: failed to open file '${kernel}': No such file or directory: Internal error\nlibxl: error: libxl_dom.c:571:libxl__build_dom: xc_dom_parse_image failed\n`,
    );
  }
  const fd = openSync(kernel, "r");
  const head = Buffer.alloc(4);
  readSync(fd, head, 0, 4, 0);
  closeSync(fd);
  if (!head.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]))) {
    throw new XlExit(
      3,
      `${err}xc: error: panic: xg_dom_core.c:689: xc_dom_find_loader: no loader found: Invalid kernel\nlibxl: error: libxl_dom.c:571:libxl__build_dom: xc_dom_parse_image failed\nlibxl: error: libxl_create.c:1640:domcreate_rebuild_done: Domain ${state.nextDomid}:cannot (re-)build domain: -3\n`,
    );
  }
  const uuidCfg = cfg.get("uuid");
  const cmdline = cfg.get("cmdline") ?? cfg.get("extra");
  const d: XlDomain = {
    domid: state.nextDomid++,
    name,
    uuid: typeof uuidCfg === "string" ? uuidCfg : randomUUID(),
    state: paused ? "paused" : "running",
    memoryMiB: memory,
    kernel,
    cmdline: typeof cmdline === "string" ? cmdline : undefined,
    disks,
    vifs,
    configText: text,
  };
  await xsWriteDomain(d);
  state.domains.push(d);
  return { out: "", err };
}

async function main(argv: string[]): Promise<{ out: string; err: string }> {
  const dir = stateDir();
  const [cmd, ...args] = argv;
  if (cmd === undefined) throw new XlExit(1, "Usage xl [-vfN] <subcommand> [args]\n");
  fault(dir, cmd);
  return withLockAsync(dir, async () => {
    const state = load(dir);
    state.calls.push(argv);
    try {
      switch (cmd) {
        case "list": {
          const long = args.includes("-l") || args.includes("--long");
          const names = args.filter((a) => !a.startsWith("-"));
          const view: XlState =
            names.length === 0 ? state : { ...state, domains: [findDomain(state, names[0])] };
          return { out: long ? longJson(view) : listTable(view), err: "" };
        }
        case "create":
          return await create(state, args);
        case "domid": {
          const d = state.domains.find((x) => x.name === args[0]);
          if (d === undefined)
            throw new XlExit(
              1,
              `Can't get domid of domain name '${args[0] ?? ""}', maybe this domain does not exist.\n`,
            );
          return { out: `${d.domid}\n`, err: "" };
        }
        case "pause":
          findDomain(state, args[0]).state = "paused";
          return { out: "", err: "" };
        case "unpause": {
          const d = findDomain(state, args[0]);
          const cfg = await xsRead(`/local/domain/${d.domid}/rumprun/cfg`);
          d.rumprunAtUnpause = cfg === null ? null : cfg.toString("base64");
          d.state = "running";
          return { out: "", err: "" };
        }
        case "shutdown":
        case "destroy": {
          const d = findDomain(state, args.filter((a) => !a.startsWith("-"))[0]);
          state.domains = state.domains.filter((x) => x !== d);
          await xsRemoveDomain(d);
          return {
            out: "",
            err:
              cmd === "shutdown"
                ? `Waiting for 1 domains\nDomain ${d.domid} has been shut down, reason code 0\nAll domains have been shut down\n`
                : "",
          };
        }
        case "save": {
          const [name, file] = args.filter((a) => !a.startsWith("-"));
          const d = findDomain(state, name);
          if (file === undefined) throw new XlExit(2, "'xl save' requires at least 2 arguments.\n");
          writeFileSync(
            file,
            Buffer.concat([Buffer.from(SAVE_MAGIC, "latin1"), Buffer.from(JSON.stringify(d))]),
          );
          state.domains = state.domains.filter((x) => x !== d);
          await xsRemoveDomain(d);
          return {
            out: "",
            err: `Saving to ${file} new xl format (info 0x3/0x0/1234)\nxc: info: Saving domain ${d.domid}, type x86 PV\n`,
          };
        }
        case "restore": {
          const paused = args.includes("-p");
          const file = args.filter((a) => !a.startsWith("-")).at(-1);
          if (file === undefined || !existsSync(file))
            throw new XlExit(1, `cannot open restore file ${file ?? ""}: No such file or directory\n`);
          const bytes = readFileSync(file);
          if (!bytes.subarray(0, SAVE_MAGIC.length).equals(Buffer.from(SAVE_MAGIC, "latin1"))) {
            throw new XlExit(1, `File has wrong magic number - corrupt or for a different tool?\n`);
          }
          const saved = JSON.parse(bytes.subarray(SAVE_MAGIC.length).toString("utf8")) as XlDomain;
          if (state.domains.some((x) => x.name === saved.name))
            throw new XlExit(3, `libxl: error: Domain with name "${saved.name}" already exists.\n`);
          const d: XlDomain = { ...saved, domid: state.nextDomid++, state: paused ? "paused" : "running" };
          delete d.rumprunAtUnpause;
          await xsWriteDomain(d);
          state.domains.push(d);
          return {
            out: "",
            err: `Loading new save file ${file} (new xl fmt info 0x3/0x0/1234)\n Savefile contains xl domain config in JSON format\nParsing config from <saved>\n`,
          };
        }
        case "network-list": {
          const d = findDomain(state, args[0]);
          let out = `${"Idx".padEnd(3)} ${"BE".padEnd(2)} ${"Mac Addr.".padEnd(17)} ${"handle".padEnd(6)} ${"state".padEnd(5)} ${"evt-ch".padEnd(6)} ${"tx-".padStart(5)}/${"rx-ring-ref".padEnd(5)} ${"BE-path".padEnd(30)}\n`;
          d.vifs.forEach((v, i) => {
            out += `${String(i).padEnd(3)} ${"0".padEnd(2)} ${v.mac}${String(i).padStart(6)} ${"4".padStart(5)} ${"-1".padStart(6)} ${"-1".padStart(5)}/${"-1".padEnd(11)} ${`/local/domain/0/backend/vif/${d.domid}/${i}`.padEnd(30)}\n`;
          });
          return { out, err: "" };
        }
        default:
          throw new XlExit(1, `command not implemented\n`);
      }
    } finally {
      save(dir, state);
    }
  });
}

/** xl takes a lock around domain creation; the double serialises every call on its state file. */
async function withLockAsync<R>(dir: string, fn: () => Promise<R>): Promise<R> {
  const lock = join(dir, "lock");
  for (let i = 0; ; i++) {
    try {
      mkdirSync(lock);
      break;
    } catch {
      if (i > 2000) throw new XlExit(1, "xl double: state lock held too long\n");
      await new Promise((r) => setTimeout(r, 5));
    }
  }
  try {
    return await fn();
  } finally {
    rmdirSync(lock);
  }
}

/** Reads the double's state (for tests). */
export function readXlState(dir: string): XlState {
  return load(dir);
}

/** Makes `xl CMD` fail with `stderr` from now on (for tests); `undefined` clears it. */
export function setXlFault(dir: string, cmd: string, stderr: string | undefined): void {
  mkdirSync(dir, { recursive: true });
  const file = join(dir, "faults.json");
  const faults = existsSync(file) ? (JSON.parse(readFileSync(file, "utf8")) as Record<string, string>) : {};
  if (stderr === undefined) delete faults[cmd];
  else faults[cmd] = stderr;
  writeFileSync(file, JSON.stringify(faults));
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href) {
  main(process.argv.slice(2)).then(
    ({ out, err }) => {
      process.stdout.write(out);
      process.stderr.write(err);
    },
    (e: unknown) => {
      if (e instanceof XlExit) {
        process.stderr.write(e.stderr);
        process.exitCode = e.status;
      } else {
        process.stderr.write(`xl double crashed: ${(e as Error).stack ?? String(e)}\n`);
        process.exitCode = 99;
      }
    },
  );
}
