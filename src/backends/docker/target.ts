/**
 * Where the engine is: `-c` (or DOCKER_HOST when -c is not given) read as the
 * docker CLI reads DOCKER_HOST, into dockerode's connection options.
 *
 * - `unix:///var/run/docker.sock`, `unix:///run/podman/podman.sock`: a local socket;
 * - `tcp://HOST[:PORT]`: plain HTTP (port 2375), or TLS (port 2376) when
 *   DOCKER_TLS_VERIFY is set (server certificate checked) or DOCKER_TLS is
 *   set (not checked), as the docker CLI does;
 * - `https://HOST[:PORT]`: TLS, the server certificate checked unless
 *   DOCKER_TLS_VERIFY is `0`/`false`.
 *
 * With TLS, `ca.pem`, `cert.pem` and `key.pem` come from DOCKER_CERT_PATH
 * (default `~/.docker`) when they exist. `display` is what messages show:
 * never a password or a key.
 */
import { existsSync, readFileSync } from "node:fs";
import { Agent } from "node:https";
import { homedir } from "node:os";
import { join } from "node:path";
import type { DockerOptions } from "dockerode";
import { UsageError } from "../../errors/index.js";
import { redactUri } from "../../log/index.js";

export const DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock";

export interface DockerTarget {
  /** The URI as given (password hidden), for messages. */
  readonly display: string;
  /** Where it came from: "-c", "DOCKER_HOST" or "the default". */
  readonly source: string;
  /** The unix socket's path, for unix:// targets. */
  readonly socketPath: string | undefined;
  readonly tls: "none" | "verified" | "unverified";
  /** dockerode's options, without timeouts. */
  readonly options: DockerOptions;
}

function set(v: string | undefined): boolean {
  return v !== undefined && v !== "";
}

/**
 * `connect`: -c's value if it was given, else undefined (then DOCKER_HOST,
 * then unix:///var/run/docker.sock).
 */
export function parseDockerTarget(
  connect: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): DockerTarget {
  const source = connect !== undefined ? "-c" : set(env["DOCKER_HOST"]) ? "DOCKER_HOST" : "the default";
  const uri = connect ?? (set(env["DOCKER_HOST"]) ? env["DOCKER_HOST"]! : DEFAULT_DOCKER_HOST);
  const display = redactUri(uri);
  const bad = (why: string): UsageError =>
    new UsageError(
      `'${display}'${source === "DOCKER_HOST" ? " (from DOCKER_HOST)" : ""} ${why}; the docker backend takes unix:///PATH, tcp://HOST[:PORT] or https://HOST[:PORT]`,
      "--connect",
    );
  if (uri.startsWith("unix://")) {
    const path = uri.slice("unix://".length);
    if (!path.startsWith("/")) throw bad("is not an absolute socket path");
    return { display, source, socketPath: path, tls: "none", options: { socketPath: path } };
  }
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    throw bad("is not a URI");
  }
  if (url.protocol !== "tcp:" && url.protocol !== "https:" && url.protocol !== "http:")
    throw bad(`has an unsupported scheme '${url.protocol.replace(/:$/, "")}'`);
  if (url.hostname === "") throw bad("names no host");
  if (url.pathname !== "" && url.pathname !== "/") throw bad("has a path");
  const verifyEnv = env["DOCKER_TLS_VERIFY"];
  const tls: DockerTarget["tls"] =
    url.protocol === "https:"
      ? verifyEnv === "0" || verifyEnv?.toLowerCase() === "false"
        ? "unverified"
        : "verified"
      : url.protocol === "tcp:" && set(verifyEnv)
        ? "verified"
        : url.protocol === "tcp:" && set(env["DOCKER_TLS"])
          ? "unverified"
          : "none";
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
  const port = url.port !== "" ? Number(url.port) : tls === "none" ? 2375 : 2376;
  if (tls === "none")
    return { display, source, socketPath: undefined, tls, options: { host, port, protocol: "http" } };
  const certPath = set(env["DOCKER_CERT_PATH"]) ? env["DOCKER_CERT_PATH"]! : join(homedir(), ".docker");
  const files: { ca?: Buffer; cert?: Buffer; key?: Buffer } = {};
  for (const name of ["ca", "cert", "key"] as const) {
    const file = join(certPath, `${name}.pem`);
    if (!existsSync(file)) continue;
    try {
      files[name] = readFileSync(file);
    } catch (err) {
      throw new UsageError(
        `cannot read ${file} (DOCKER_CERT_PATH) for '${display}': ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
        "--connect",
      );
    }
  }
  if ((files.cert === undefined) !== (files.key === undefined)) {
    throw new UsageError(
      `${certPath} (DOCKER_CERT_PATH) has ${files.cert === undefined ? "key.pem but no cert.pem" : "cert.pem but no key.pem"}: the client certificate needs both`,
      "--connect",
    );
  }
  const options: DockerOptions = { host, port, protocol: "https", ...files };
  if (tls === "unverified") {
    // docker-modem takes no rejectUnauthorized: an agent of our own carries it.
    (options as { agent?: Agent }).agent = new Agent({
      ...files,
      rejectUnauthorized: false,
      keepAlive: true,
    });
  }
  return { display, source, socketPath: undefined, tls, options };
}
