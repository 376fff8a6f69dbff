/**
 * The error classes users see. Each carries a stable `code` (as undici and Node
 * core do) and a one-line message that says what is wrong and what to do.
 * Errors from outside (libvirt, XenAPI, xl, QMP) keep their own code and text
 * in `cause` / `detail`.
 */
export type JitsuErrorCode =
  | "ERR_CONFIG"
  | "ERR_USAGE"
  | "ERR_BACKEND"
  | "ERR_START_TIMEOUT"
  | "ERR_STORE"
  | "ERR_LISTEN"
  | "ERR_PREFLIGHT"
  | "ERR_SUMMON_REFUSED";

export class JitsuError extends Error {
  readonly code: JitsuErrorCode;
  constructor(code: JitsuErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** A CONFIG string, config file or option value that cannot be used. */
export class ConfigError extends JitsuError {
  readonly vm: string | undefined;
  readonly key: string | undefined;
  constructor(message: string, context: { vm?: string; key?: string; cause?: unknown } = {}) {
    super("ERR_CONFIG", ConfigError.format(message, context), { cause: context.cause });
    this.vm = context.vm;
    this.key = context.key;
  }
  private static format(message: string, { vm, key }: { vm?: string; key?: string }): string {
    const where = [
      vm === undefined ? undefined : `VM '${vm}'`,
      key === undefined ? undefined : `key '${key}'`,
    ]
      .filter((s) => s !== undefined)
      .join(", ");
    return where === "" ? message : `${where}: ${message}`;
  }
}

/** A command-line option with a bad value. */
export class UsageError extends JitsuError {
  readonly option: string | undefined;
  constructor(message: string, option?: string) {
    super("ERR_USAGE", option === undefined ? message : `option '${option}': ${message}`);
    this.option = option;
  }
}

/**
 * A backend operation that failed. `detail` keeps the backend's own code and text
 * (libvirt's error code, XenAPI's ErrorDescription, xl's stderr, QMP's class).
 * `unavailable`: the daemon behind the backend (libvirtd, the container
 * engine, XAPI) could not be reached or did not answer: the VM is not at
 * fault, so the summoner does not back off from it (it may work as soon as
 * the daemon is back).
 */
export class BackendError extends JitsuError {
  readonly backend: string;
  readonly vm: string | undefined;
  readonly detail: string | undefined;
  readonly unavailable: boolean;
  constructor(
    backend: string,
    message: string,
    context: { vm?: string; detail?: string; cause?: unknown; unavailable?: boolean } = {},
  ) {
    super(
      "ERR_BACKEND",
      `${backend}${context.vm === undefined ? "" : ` VM '${context.vm}'`}: ${message}${
        context.detail === undefined ? "" : ` (${context.detail})`
      }`,
      { cause: context.cause },
    );
    this.backend = backend;
    this.vm = context.vm;
    this.detail = context.detail;
    this.unavailable = context.unavailable === true;
  }
}

/** A VM that did not become ready within the start timeout. */
export class StartTimeoutError extends JitsuError {
  constructor(vm: string, seconds: number, phase: string) {
    super("ERR_START_TIMEOUT", `VM '${vm}' was not ready after ${seconds} s (still ${phase})`);
  }
}

/**
 * Why a summon was refused (the `reason` label of `jitsu_dns_refused_total`):
 * "summon-rate", the client's prefix is over `--summon-rate`.
 */
export type SummonRefusal = "summon-rate";

/**
 * A cold summon jitsu will not make for this client now (admission control,
 * src/summoner/admission.ts). Not a failure of the VM: the DNS server answers
 * REFUSED, not SERVFAIL, and logs nothing above debug (a flood must not flood
 * the log).
 */
export class SummonRefusedError extends JitsuError {
  readonly reason: SummonRefusal;
  constructor(reason: SummonRefusal, message: string) {
    super("ERR_SUMMON_REFUSED", message);
    this.reason = reason;
  }
}

/** A persistent-state problem (--persistdb); the message names the database file and what to do. */
export class StoreError extends JitsuError {
  readonly path: string;
  constructor(path: string, message: string, options?: { cause?: unknown }) {
    super("ERR_STORE", `state database '${path}': ${message}`, options);
    this.path = path;
  }
}

/**
 * Every problem a backend's start-up checks found (its `preflight`: a missing
 * file, a program not on PATH, an unwritable --state-dir), each a ConfigError
 * naming the VM and the key or a UsageError naming the option. The message
 * has one line per problem; `describeErrorLines` gives them one by one.
 */
export class PreflightError extends JitsuError {
  readonly problems: readonly JitsuError[];
  constructor(problems: readonly JitsuError[]) {
    super("ERR_PREFLIGHT", problems.map((p) => p.message).join("\n"));
    this.problems = problems;
  }
}

/** Turns anything thrown into a one-line message for a user. */
export function describeError(err: unknown): string {
  if (err instanceof Error) return err.message.split("\n")[0] ?? String(err);
  return String(err);
}

/** Like describeError, but one line per problem of a PreflightError. */
export function describeErrorLines(err: unknown): string[] {
  if (err instanceof PreflightError) return err.problems.map((p) => describeError(p));
  return [describeError(err)];
}

/**
 * A socket jitsu could not listen on (DNS, --http), in one line that says
 * what to do about it: the system's own code (EACCES, EADDRINUSE, ...) stays
 * in the text and in `cause`.
 */
export class ListenError extends JitsuError {
  /** `what`: the socket, e.g. "UDP" or "HTTP (--http)"; `portOption`: the option that picks the port. */
  static of(what: string, host: string, port: number, err: unknown, portOption = "-l"): ListenError {
    const code = (err as { code?: unknown } | null)?.code;
    const where = `${what} ${host.includes(":") ? `[${host}]` : host}:${port}`;
    return new ListenError(`cannot listen on ${where}: ${explain(code, err, host, port, portOption)}`, err);
  }

  /** A message made elsewhere (a --workers worker's, carried over IPC). */
  constructor(message: string, cause?: unknown) {
    super("ERR_LISTEN", message, { cause });
  }
}

function explain(code: unknown, err: unknown, host: string, port: number, portOption: string): string {
  switch (code) {
    case "EACCES":
      return port < 1024
        ? `permission denied (EACCES): ports below 1024 need privileges. Run jitsu as root, or give Node the capability once with ` +
            `sudo setcap cap_net_bind_service=+ep "$(readlink -f "$(command -v node)")", or choose a port of 1024 or above with ${portOption}`
        : `permission denied (EACCES): something on this machine (a security policy) forbids it; choose another port with ${portOption}`;
    case "EADDRINUSE":
      return `the port is already in use (EADDRINUSE) by another program${usualHolder(port)}. See which with: ss -lntup 'sport = :${port}'; stop it, or choose another port with ${portOption}`;
    case "EADDRNOTAVAIL":
      return `${host} is not an address of this machine (EADDRNOTAVAIL); choose one it has with -b (see: ip -brief address)`;
    default:
      return describeError(err);
  }
}

function usualHolder(port: number): string {
  if (port === 53)
    return " (on port 53 usually a local resolver: systemd-resolved, dnsmasq, bind9 or unbound)";
  if (port === 5353) return " (on port 5353 usually an mDNS responder such as avahi-daemon)";
  return "";
}
