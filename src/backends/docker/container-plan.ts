/**
 * What a VM's CONFIG keys ask of the engine: the container's name, and, with
 * `image`, how to create it (the body of POST /containers/create). Every
 * problem is a ConfigError naming the VM and the key; with `problems` (the
 * preflight) they are all collected instead of the first thrown.
 */
import type { ContainerCreateOptions } from "dockerode";
import type { VmSpec } from "../../config/index.js";
import { ConfigError } from "../../errors/index.js";
import { splitCommandLine } from "../process/index.js";
import { CREATED_LABEL } from "./keys.js";

export interface ContainerPlan {
  readonly name: string;
  /** With `image`: what to create when no container `name` exists. */
  readonly create: ContainerCreateOptions | undefined;
  /** stop_timeout, in seconds; undefined: the container's own. */
  readonly stopTimeout: number | undefined;
  /** True when the container shares the host's network (network=host). */
  readonly hostNetwork: boolean;
}

const CREATE_ONLY = ["cmd", "env", "publish", "network", "memory"] as const;

export function planContainer(spec: VmSpec, problems?: ConfigError[]): ContainerPlan {
  const o = spec.options;
  const vm = spec.label;
  const fail = (key: string, message: string): void => {
    const err = new ConfigError(message, { vm, key });
    if (problems === undefined) throw err;
    problems.push(err);
  };
  const name = spec.name ?? o.requireStr("name");
  if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(name))
    fail("name", `'${name}' is not a container name or id (letters, digits, '_', '.', '-')`);
  const stopTimeout = readOr(problems, () => o.float("stop_timeout"));
  if (stopTimeout !== undefined && !Number.isInteger(stopTimeout))
    fail(
      "stop_timeout",
      `expected whole seconds (the engine takes an integer), got '${o.str("stop_timeout")}'`,
    );
  const image = o.str("image");
  if (image === undefined) {
    for (const key of CREATE_ONLY) {
      if (o.has(key))
        fail(
          key,
          `only applies to a container jitsu creates: give 'image' too, or set it on the existing container '${name}'`,
        );
    }
    return { name, create: undefined, stopTimeout, hostNetwork: false };
  }

  const env: string[] = [];
  for (const e of o.all("env")) {
    if (!/^[^=\s]+=/.test(e)) fail("env", `expected NAME=VALUE, got '${e}'`);
    else env.push(e);
  }
  let cmd: string[] | undefined;
  const cmdText = o.str("cmd");
  if (cmdText !== undefined) {
    try {
      cmd = splitCommandLine(cmdText);
      if (cmd.length === 0) fail("cmd", "expected a command, got only spaces");
    } catch (err) {
      fail("cmd", (err as Error).message);
    }
  }
  const exposed: Record<string, object> = {};
  const bindings: Record<string, { HostIp: string; HostPort: string }[]> = {};
  for (const p of o.all("publish")) {
    const parsed = parsePublish(p);
    if (typeof parsed === "string") {
      fail("publish", parsed);
      continue;
    }
    const key = `${parsed.port}/${parsed.proto}`;
    exposed[key] = {};
    (bindings[key] ??= []).push({ HostIp: parsed.hostIp, HostPort: String(parsed.hostPort) });
  }
  const network = o.str("network");
  const memory = readOr(problems, () => o.sizeBytes("memory", 1));
  if (memory !== undefined && memory < 6 * 1024 * 1024)
    fail("memory", `${memory} bytes is below the engines' minimum of 6 MiB (give a unit: 512m)`);
  const hostNetwork = network === "host";
  if (hostNetwork && o.has("publish"))
    fail("publish", "has no effect with network=host (the container uses the host's ports directly)");

  const create: ContainerCreateOptions = {
    name,
    Image: image,
    Labels: { [CREATED_LABEL]: vm },
    ...(cmd === undefined ? {} : { Cmd: cmd }),
    ...(env.length === 0 ? {} : { Env: env }),
    ...(Object.keys(exposed).length === 0 ? {} : { ExposedPorts: exposed }),
    ...(stopTimeout === undefined ? {} : { StopTimeout: stopTimeout }),
    HostConfig: {
      ...(Object.keys(bindings).length === 0 ? {} : { PortBindings: bindings }),
      ...(network === undefined ? {} : { NetworkMode: network }),
      ...(memory === undefined ? {} : { Memory: memory }),
    },
  };
  return { name, create, stopTimeout, hostNetwork };
}

function readOr<T>(problems: ConfigError[] | undefined, read: () => T): T | undefined {
  try {
    return read();
  } catch (err) {
    if (problems === undefined || !(err instanceof ConfigError)) throw err;
    problems.push(err);
    return undefined;
  }
}

export interface Publish {
  readonly hostIp: string;
  readonly hostPort: number;
  readonly port: number;
  readonly proto: "tcp" | "udp";
}

/** `[HOSTADDR:]HOSTPORT:PORT[/tcp|/udp]` (HOSTADDR may be [v6]), as `docker run -p`; a string says what is wrong. */
export function parsePublish(text: string): Publish | string {
  const m = /^(?:(\[[0-9a-fA-F:.]+\]|[0-9.]+):)?(\d+):(\d+)(?:\/(tcp|udp))?$/.exec(text);
  if (m === null)
    return `expected [HOSTADDR:]HOSTPORT:PORT[/tcp|/udp] (e.g. 127.0.0.1:8080:80), got '${text}'`;
  const hostIp = (m[1] ?? "").replace(/^\[(.*)\]$/, "$1");
  if (hostIp !== "" && !isIp(hostIp)) return `'${hostIp}' is not an IP address in '${text}'`;
  const hostPort = Number(m[2]);
  const port = Number(m[3]);
  for (const p of [hostPort, port])
    if (p < 1 || p > 65535) return `port ${p} is out of range 1-65535 in '${text}'`;
  return { hostIp, hostPort, port, proto: (m[4] as "tcp" | "udp" | undefined) ?? "tcp" };
}

function isIp(s: string): boolean {
  if (s.includes(":")) return /^[0-9a-fA-F:.]+$/.test(s) && s.split("::").length <= 2;
  const parts = s.split(".");
  return parts.length === 4 && parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255);
}
