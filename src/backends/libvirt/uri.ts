/**
 * libvirt connection URIs, read the way libvirt's remote driver reads them
 * (https://libvirt.org/uri.html, https://libvirt.org/remote.html):
 *
 *   driver[+transport]://[user@][host][:port]/path[?param=value&...]
 *
 * No host means the local daemon over its unix socket; a host without a
 * transport means TLS. The parameters the remote driver itself consumes
 * (socket, pkipath, no_verify, command, ...) are removed from the URI sent to
 * the daemon in CONNECT_OPEN, as is the transport, user, host and port:
 * `qemu+ssh://root@h/system?keyfile=k` opens `qemu:///system` on h.
 */
import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

export type Transport = "unix" | "tcp" | "tls" | "ssh";

export interface LibvirtUri {
  /** As the user wrote it (for messages). */
  readonly original: string;
  readonly driver: string;
  readonly transport: Transport;
  readonly user: string | undefined;
  readonly host: string | undefined;
  readonly port: number | undefined;
  /** "/system", "/session", "/default", "/abs/path/node.xml", "/" */
  readonly path: string;
  /** Every parameter, decoded, in order. */
  readonly params: ReadonlyMap<string, string>;
  /** What CONNECT_OPEN carries. */
  readonly openName: string;
}

export class UriError extends Error {
  constructor(uri: string, reason: string) {
    super(`libvirt URI '${uri}': ${reason}`);
    this.name = "UriError";
  }
}

/** Parameters the remote driver consumes (libvirt src/remote/remote_driver.c doRemoteOpen). */
const REMOTE_PARAMS = new Set([
  "name",
  "command",
  "socket",
  "auth",
  "netcat",
  "keyfile",
  "sshauth",
  "no_sanity",
  "no_verify",
  "no_tty",
  "pkipath",
  "known_hosts",
  "known_hosts_verify",
  "tls_priority",
  "mode",
  "proxy",
]);

/** Drivers the daemon serves (libvirt's driver URI schemes). */
const DRIVERS = new Set([
  "qemu",
  "xen",
  "test",
  "lxc",
  "vbox",
  "bhyve",
  "ch",
  "vz",
  "openvz",
  "libxl",
  "network",
  "nwfilter",
  "storage",
  "secret",
  "interface",
  "nodedev",
  "remote",
]);

const URI_RE =
  /^([A-Za-z][A-Za-z0-9-]*)(?:\+([A-Za-z0-9-]+))?:\/\/(?:([^@/?]*)@)?(\[[^\]]*\]|[^:/?]*)(?::([0-9]*))?(\/[^?#]*)?(?:\?([^#]*))?(?:#.*)?$/;

export function parseLibvirtUri(uri: string): LibvirtUri {
  const m = URI_RE.exec(uri.trim());
  if (m === null) {
    throw new UriError(
      uri,
      "expected driver[+transport]://[user@][host][:port]/path[?params], e.g. qemu:///system",
    );
  }
  const driver = m[1]!.toLowerCase();
  if (!DRIVERS.has(driver)) {
    throw new UriError(uri, `unsupported driver '${driver}' (known: ${[...DRIVERS].sort().join(", ")})`);
  }
  const transportRaw = m[2]?.toLowerCase();
  const user = m[3] === undefined || m[3] === "" ? undefined : decode(uri, m[3]);
  const hostRaw = m[4] ?? "";
  const host = hostRaw === "" ? undefined : hostRaw.replace(/^\[|\]$/g, "");
  let port: number | undefined;
  if (m[5] !== undefined && m[5] !== "") {
    port = Number(m[5]);
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new UriError(uri, `bad port '${m[5]}'`);
  }
  const path = m[6] === undefined || m[6] === "" ? "/" : decode(uri, m[6]);
  const params = new Map<string, string>();
  const kept: string[] = [];
  if (m[7] !== undefined && m[7] !== "") {
    for (const part of m[7].split(/[&;]/)) {
      if (part === "") continue;
      const eq = part.indexOf("=");
      const key = decode(uri, eq < 0 ? part : part.slice(0, eq)).toLowerCase();
      const value = eq < 0 ? "" : decode(uri, part.slice(eq + 1));
      params.set(key, value);
      if (!REMOTE_PARAMS.has(key)) kept.push(part);
    }
  }
  let transport: Transport;
  if (transportRaw === undefined) transport = host === undefined ? "unix" : "tls";
  else if (
    transportRaw === "unix" ||
    transportRaw === "tcp" ||
    transportRaw === "tls" ||
    transportRaw === "ssh"
  ) {
    transport = transportRaw;
  } else {
    throw new UriError(uri, `unsupported transport '+${transportRaw}' (jitsu speaks unix, tcp, tls and ssh)`);
  }
  if ((transport === "tcp" || transport === "tls" || transport === "ssh") && host === undefined) {
    throw new UriError(uri, `the ${transport} transport needs a host`);
  }
  if (transport === "unix" && host !== undefined) {
    throw new UriError(uri, "the unix transport cannot reach a host; use +ssh, +tls or +tcp");
  }
  if (transport !== "unix" && transport !== "ssh" && params.has("socket")) {
    throw new UriError(uri, `'socket' only applies to the unix and ssh transports`);
  }
  let openName: string;
  const explicitName = params.get("name");
  if (explicitName !== undefined) openName = explicitName;
  else if (driver === "remote") openName = "";
  else openName = `${driver}://${path}${kept.length > 0 ? `?${kept.join("&")}` : ""}`;
  return { original: uri, driver, transport, user, host, port, path, params, openName };
}

function decode(uri: string, s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new UriError(uri, `bad percent-encoding in '${s}'`);
  }
}

/** Whether the URI names a per-user ("session") daemon. */
export function isSession(uri: LibvirtUri): boolean {
  return uri.path === "/session";
}

/** The daemon that serves a driver when libvirt runs split ("modular") daemons. */
function modularDaemon(driver: string): string | undefined {
  switch (driver) {
    case "qemu":
    case "lxc":
    case "vbox":
    case "bhyve":
    case "ch":
    case "vz":
    case "network":
    case "nwfilter":
    case "storage":
    case "secret":
    case "interface":
    case "nodedev":
      return `virt${driver}d`;
    case "xen":
    case "libxl":
      return "virtxend";
    default:
      return undefined;
  }
}

/**
 * What to do when a local URI's daemon socket is missing or refuses us: which
 * daemon serves the URI and how to start it. Unlike virsh, jitsu does not
 * start a session daemon itself (libvirt's client autostart).
 */
export function daemonHint(uri: LibvirtUri): string {
  const daemon = modularDaemon(uri.driver);
  const which =
    daemon === undefined ? "libvirtd" : `libvirtd, or ${daemon} where libvirt runs one daemon per driver`;
  if (isSession(uri)) {
    return (
      `no per-user libvirt daemon serves ${uri.original}; unlike virsh, jitsu does not start one itself: ` +
      `start it first as this user (${daemon ?? "libvirtd"} --daemon, or systemctl --user start ${daemon ?? "libvirtd"}.socket)`
    );
  }
  const driver = uri.driver === "test" ? " (the test driver runs inside libvirtd too)" : "";
  return (
    `no libvirt daemon serves ${uri.original} here${driver}: start ${which} ` +
    `(systemctl start ${daemon === undefined ? "libvirtd" : `${daemon} or libvirtd`}), or point ?socket=PATH at the socket of one that runs`
  );
}

/**
 * The unix socket for a local URI (libvirt remote_sockets.c): `?socket=` if
 * given; else the session directory ($XDG_RUNTIME_DIR/libvirt, or
 * ~/.cache/libvirt) for /session URIs, /var/run/libvirt otherwise. With
 * mode=legacy the monolithic libvirtd socket, with mode=direct the driver's own
 * daemon socket (virtqemud-sock, ...), and with mode=auto (the default) the
 * legacy one if it exists, else the driver's.
 */
export function unixSocketPath(
  uri: LibvirtUri,
  env: NodeJS.ProcessEnv = process.env,
  exists: (p: string) => boolean = existsSync,
): string {
  const explicit = uri.params.get("socket");
  if (explicit !== undefined && explicit !== "") return explicit;
  const dir = isSession(uri)
    ? join(env.XDG_RUNTIME_DIR ?? join(homedir(), ".cache"), "libvirt")
    : "/var/run/libvirt";
  const legacy = join(dir, "libvirt-sock");
  const mode = uri.params.get("mode") ?? "auto";
  const daemon = modularDaemon(uri.driver);
  const direct = daemon === undefined ? undefined : join(dir, `${daemon}-sock`);
  switch (mode) {
    case "legacy":
      return legacy;
    case "direct":
      if (direct === undefined)
        throw new UriError(uri.original, `mode=direct: the ${uri.driver} driver has no daemon of its own`);
      return direct;
    case "auto":
      if (exists(legacy) || direct === undefined) return legacy;
      return exists(direct) ? direct : legacy;
    default:
      throw new UriError(uri.original, `mode must be auto, legacy or direct, not '${mode}'`);
  }
}

/** TLS files (libvirt virnettlscontext.c): ?pkipath=DIR, else ~/.pki/libvirt for non-root if present, else system paths. */
export function tlsFiles(
  uri: LibvirtUri,
  env: NodeJS.ProcessEnv = process.env,
  exists: (p: string) => boolean = existsSync,
  isRoot: boolean = process.getuid?.() === 0,
): { ca: string; cert: string; key: string } {
  const pki = uri.params.get("pkipath");
  if (pki !== undefined && pki !== "") {
    return {
      ca: join(pki, "cacert.pem"),
      cert: join(pki, "clientcert.pem"),
      key: join(pki, "clientkey.pem"),
    };
  }
  if (!isRoot) {
    const userDir = join(env.HOME ?? homedir(), ".pki", "libvirt");
    if (exists(join(userDir, "clientcert.pem"))) {
      const ca = join(userDir, "cacert.pem");
      return {
        ca: exists(ca) ? ca : "/etc/pki/CA/cacert.pem",
        cert: join(userDir, "clientcert.pem"),
        key: join(userDir, "clientkey.pem"),
      };
    }
  }
  return {
    ca: "/etc/pki/CA/cacert.pem",
    cert: "/etc/pki/libvirt/clientcert.pem",
    key: "/etc/pki/libvirt/private/clientkey.pem",
  };
}

export const DEFAULT_TCP_PORT = 16509;
export const DEFAULT_TLS_PORT = 16514;
