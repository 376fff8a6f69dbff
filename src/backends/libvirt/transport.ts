/**
 * Opens the byte stream to libvirtd for a URI's transport, the way libvirt's
 * remote driver does (src/remote/remote_driver.c, src/rpc/virnetclient.c):
 *  - unix: the daemon's socket (see uri.ts unixSocketPath);
 *  - tcp:  plain TCP, port 16509;
 *  - tls:  TLS, port 16514, with the CA, client certificate and key from the
 *          usual places or ?pkipath=; after the handshake the daemon sends one
 *          byte, 1, when it accepts our certificate (virNetClientSetTLSSession);
 *  - ssh:  the ssh client runs a proxy on the remote host that joins stdin and
 *          stdout to the daemon's socket: virt-ssh-helper or nc -U, chosen as
 *          libvirt's ?proxy= (auto, native, netcat) says.
 */
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { connect as netConnect, type Socket } from "node:net";
import { Duplex } from "node:stream";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import {
  DEFAULT_TCP_PORT,
  DEFAULT_TLS_PORT,
  daemonHint,
  tlsFiles,
  unixSocketPath,
  type LibvirtUri,
} from "./uri.js";

/** Why a transport could not be opened; `message` is one line for users. */
export class TransportError extends Error {
  constructor(
    message: string,
    readonly errno?: string,
  ) {
    super(message);
    this.name = "TransportError";
  }
}

export interface OpenedTransport {
  readonly stream: Duplex;
  /** Where we connected, for messages ("/var/run/libvirt/libvirt-sock", "host:16514", "ssh host"). */
  readonly endpoint: string;
}

export async function openTransport(uri: LibvirtUri, timeoutMs: number): Promise<OpenedTransport> {
  switch (uri.transport) {
    case "unix": {
      const path = unixSocketPath(uri);
      const socket = await connectSocket(() => netConnect({ path }), `socket ${path}`, timeoutMs, {
        noDaemon: daemonHint(uri),
      });
      return { stream: socket, endpoint: path };
    }
    case "tcp": {
      const port = uri.port ?? DEFAULT_TCP_PORT;
      const endpoint = `${uri.host}:${port}`;
      const socket = await connectSocket(() => netConnect({ host: uri.host, port }), endpoint, timeoutMs);
      socket.setNoDelay(true);
      return { stream: socket, endpoint };
    }
    case "tls":
      return openTls(uri, timeoutMs);
    case "ssh":
      return openSsh(uri);
  }
}

/** `noDaemon`: what to say when nothing listens (a local socket's daemon and how to start it). */
function describeSocketError(
  err: NodeJS.ErrnoException,
  where: string,
  noDaemon = "is libvirtd running?",
): string {
  switch (err.code) {
    case "ENOENT":
      return `${where} does not exist (${noDaemon})`;
    case "ECONNREFUSED":
      return `connection refused by ${where} (${noDaemon})`;
    case "EACCES":
    case "EPERM":
      return `permission denied on ${where} (run jitsu as a user allowed to use libvirt, e.g. in the libvirt group)`;
    case "ETIMEDOUT":
      return `timed out connecting to ${where}`;
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return `cannot resolve the host of ${where}`;
    default:
      if (/CERT|UNABLE_TO|SELF_SIGNED/.test(err.code ?? "")) {
        return `${where} presented a certificate we do not trust: ${err.message} (check cacert.pem, or ?no_verify=1)`;
      }
      return `cannot connect to ${where}: ${err.message}`;
  }
}

function connectSocket<S extends Socket>(
  make: () => S,
  where: string,
  timeoutMs: number,
  options: { event?: string; noDaemon?: string } = {},
): Promise<S> {
  const event = options.event ?? "connect";
  return new Promise<S>((resolve, reject) => {
    const socket = make();
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new TransportError(`timed out after ${timeoutMs} ms connecting to ${where}`, "ETIMEDOUT"));
    }, timeoutMs);
    socket.once(event, () => {
      clearTimeout(timer);
      socket.removeAllListeners("error");
      resolve(socket);
    });
    socket.once("error", (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      socket.destroy();
      reject(new TransportError(describeSocketError(err, where, options.noDaemon), err.code));
    });
  });
}

function readFile(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new TransportError(
      `cannot read the TLS ${what} ${path}: ${(err as Error).message} (see ?pkipath=)`,
    );
  }
}

async function openTls(uri: LibvirtUri, timeoutMs: number): Promise<OpenedTransport> {
  const files = tlsFiles(uri);
  const port = uri.port ?? DEFAULT_TLS_PORT;
  const endpoint = `${uri.host}:${port}`;
  const noVerify = uri.params.get("no_verify") === "1";
  const ca = readFile(files.ca, "CA certificate");
  const cert = readFile(files.cert, "client certificate");
  const key = readFile(files.key, "client key");
  const socket = await connectSocket<TLSSocket>(
    () =>
      tlsConnect({
        host: uri.host,
        port,
        ca,
        cert,
        key,
        servername: uri.host !== undefined && /^[0-9.:]+$/.test(uri.host) ? undefined : uri.host,
        rejectUnauthorized: !noVerify,
      }),
    `TLS ${endpoint}`,
    timeoutMs,
    { event: "secureConnect" },
  );
  // virNetClientSetTLSSession: the daemon checks our certificate, then sends '\1'.
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => fail(new TransportError(`no TLS confirmation from ${endpoint}`)),
      timeoutMs,
    );
    const fail = (err: Error): void => {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    };
    socket.once("error", (err) => fail(new TransportError(`TLS with ${endpoint} failed: ${err.message}`)));
    socket.once("end", () => fail(new TransportError(`${endpoint} refused our TLS client certificate`)));
    socket.once("data", (chunk: Buffer) => {
      clearTimeout(timer);
      socket.removeAllListeners("error");
      socket.removeAllListeners("end");
      socket.pause();
      if (chunk[0] !== 1) {
        fail(new TransportError(`${endpoint} refused our TLS client certificate or address`));
        return;
      }
      if (chunk.length > 1) socket.unshift(chunk.subarray(1));
      resolve();
    });
  });
  return { stream: socket, endpoint };
}

/** The remote command, as libvirt's virNetClientSSHHelperCommand builds it. */
export function sshRemoteCommand(uri: LibvirtUri): string {
  // A socket named in the URI can only be reached with nc: virt-ssh-helper finds its own.
  const proxy = uri.params.get("proxy") ?? (uri.params.has("socket") ? "netcat" : "auto");
  const netcat = uri.params.get("netcat") ?? "nc";
  const socket = uri.params.get("socket") ?? "/var/run/libvirt/libvirt-sock";
  const q = shellQuote;
  const nc = `if ${q(netcat)} -q 2>&1 | grep "requires an argument" >/dev/null 2>&1; then ARG=-q0; else ARG=; fi; ${q(netcat)} $ARG -U ${q(socket)}`;
  const helper = `virt-ssh-helper ${q(uri.openName)}`;
  switch (proxy) {
    case "native":
      return helper;
    case "netcat":
      return `sh -c ${q(nc)}`;
    case "auto":
      return `sh -c ${q(`which virt-ssh-helper 1>/dev/null 2>&1; if test $? = 0; then ${helper}; else ${nc}; fi`)}`;
    default:
      throw new TransportError(`proxy must be auto, native or netcat, not '${proxy}'`);
  }
}

/** The ssh command line (libvirt virNetSocketNewConnectSSH). */
export function sshArgs(uri: LibvirtUri): { command: string; args: string[] } {
  const args: string[] = [];
  if (uri.port !== undefined) args.push("-p", String(uri.port));
  if (uri.user !== undefined) args.push("-l", uri.user);
  const keyfile = uri.params.get("keyfile");
  if (keyfile !== undefined) args.push("-i", keyfile);
  const knownHosts = uri.params.get("known_hosts");
  if (knownHosts !== undefined) args.push("-o", `UserKnownHostsFile=${knownHosts}`);
  args.push("-T");
  if (uri.params.get("no_tty") === "1") args.push("-o", "BatchMode=yes");
  args.push("-e", "none", "--", uri.host!, sshRemoteCommand(uri));
  return { command: uri.params.get("command") ?? "ssh", args };
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

function openSsh(uri: LibvirtUri): Promise<OpenedTransport> {
  const { command, args } = sshArgs(uri);
  const endpoint = `ssh ${uri.user === undefined ? "" : `${uri.user}@`}${uri.host}`;
  return new Promise<OpenedTransport>((resolve, reject) => {
    const child = spawn(command, args, { stdio: ["pipe", "pipe", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (c: Buffer) => {
      stderr = (stderr + c.toString()).slice(-2000);
    });
    const lastLine = (): string =>
      stderr
        .trim()
        .split("\n")
        .filter((l) => l.trim() !== "")
        .at(-1) ?? "";
    // The stream ends when ssh exits (not when its stdout closes), so the reason
    // (ssh's last line on stderr: "Permission denied", "Connection refused") reaches the caller.
    const stream = new Duplex({
      read() {
        child.stdout.resume();
      },
      write(chunk: Buffer, _encoding, callback) {
        if (child.stdin.writable) child.stdin.write(chunk, () => callback());
        else callback();
      },
      final(callback) {
        child.stdin.end();
        callback();
      },
      destroy(err, callback) {
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
        callback(err);
      },
    });
    child.stdout.on("data", (c: Buffer) => {
      if (!stream.push(c)) child.stdout.pause();
    });
    child.stdin.on("error", () => undefined); // EPIPE when ssh is gone: its exit says why
    child.once("error", (err: NodeJS.ErrnoException) =>
      reject(
        new TransportError(
          err.code === "ENOENT" ? `cannot run '${command}' for ${endpoint}: not found` : err.message,
          err.code,
        ),
      ),
    );
    child.once("close", (code, signal) => {
      if (code === 0) {
        stream.push(null);
        return;
      }
      const why = lastLine();
      stream.destroy(
        new TransportError(
          `${endpoint} exited (${signal ?? `status ${code}`})${why === "" ? "" : `: ${why}`}`,
        ),
      );
    });
    child.once("spawn", () => resolve({ stream, endpoint }));
  });
}
