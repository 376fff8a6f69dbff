/**
 * `jitsu check [OPTIONS] [CONFIG...]`: everything a start would check, with
 * nothing started. Every problem is one line (the same text a start would
 * stop with), then a summary; the exit code is 1 if there was any. In order:
 * the options (the command line over --config FILE), every VM's keys
 * (CONFIG strings and the file's, each checked alone so one bad VM hides no
 * other; a connect= URI as -c), -m against the backend, --persistdb, the
 * backend's preflight (files, programs, --state-dir), that the backend can be
 * reached (-c, and each VM's connect= host) and that every VM resolves on its
 * host, and that the DNS and --http addresses can be bound
 * (bound and released at once; skipped for sockets systemd passes).
 *
 * What it leaves behind is what the preflight does: the backend's folder
 * under --state-dir (created as a start would). No VM is started or stopped,
 * no database is created, no listener stays open.
 */
import { constants, accessSync, existsSync, statSync } from "node:fs";
import { createSocket } from "node:dgram";
import { createServer } from "node:net";
import { dirname, join, resolve } from "node:path";
import type { CommanderError } from "commander";
import {
  checkStopMode,
  findBackend,
  hostOptions,
  runPreflight,
  specOptions,
  type BackendFactory,
} from "../backends/index.js";
import { systemClock } from "../clock/index.js";
import {
  buildVmSpec,
  distinctVms,
  mergeOptions,
  parseConfigString,
  readConfigFile,
  type ConfigFile,
  type VmSpec,
} from "../config/index.js";
import {
  ConfigError,
  ListenError,
  PreflightError,
  UsageError,
  describeError,
  describeErrorLines,
} from "../errors/index.js";
import { createLogger, redactUri } from "../log/index.js";
import { SqliteStore } from "../store/index.js";
import { buildCommand } from "./command.js";
import { fileOptionSpecs, kebabKeys, toSettings, type Settings } from "./options.js";

export interface CheckReport {
  readonly problems: string[];
  /** What was checked, for the summary line. */
  readonly checked: string[];
}

/** Runs every check; never throws for a problem it can name. */
export async function runCheck(argv: readonly string[]): Promise<CheckReport> {
  const problems: string[] = [];
  const checked: string[] = [];
  const add = (err: unknown): void => {
    for (const line of describeErrorLines(err)) problems.push(line);
  };

  // 1. The command line, and --config FILE under it.
  const program = buildCommand().exitOverride();
  program.name("jitsu check").usage("[OPTIONS] [CONFIG...]");
  program.configureOutput({ writeErr: () => undefined, writeOut: (s) => process.stdout.write(s) });
  try {
    program.parse(argv, { from: "user" });
  } catch (err) {
    const c = err as CommanderError;
    if (c.exitCode === 0) throw err; // --help, --version
    problems.push(`${c.message.replace(/^error: /, "")} (see jitsu --help)`);
    return { problems, checked };
  }
  const given = kebabKeys(program.opts());
  let file: ConfigFile | undefined;
  if (typeof given.config === "string") {
    try {
      file = readConfigFile(given.config, fileOptionSpecs());
      checked.push(`config file ${given.config}`);
    } catch (err) {
      add(err);
    }
  }
  const merged = file === undefined ? { ...given } : mergeOptions(file.options, given);
  let settings: Settings | undefined;
  // A bad value is reported and left out, so the rest (another bad option, the VMs) is still checked.
  for (let attempt = 0; attempt < 64 && settings === undefined; attempt++) {
    try {
      settings = toSettings(merged, program.args, file);
    } catch (err) {
      const option = err instanceof UsageError ? err.option?.replace(/^--/, "") : undefined;
      const fromFile = file !== undefined && option !== undefined && given[option] === undefined;
      problems.push(fromFile ? `config file '${file!.path}': ${describeError(err)}` : describeError(err));
      if (option === undefined || merged[option] === undefined) break;
      delete merged[option];
    }
  }
  if (settings === undefined) return { problems, checked };

  // 2. The backend and every VM, each alone.
  let factory: BackendFactory;
  try {
    factory = findBackend(settings.backend);
  } catch (err) {
    add(err);
    return { problems, checked };
  }
  const opts = specOptions(factory);
  const specs: VmSpec[] = [];
  settings.configs.forEach((text, i) => {
    const source = `CONFIG #${i + 1}`;
    try {
      specs.push(buildVmSpec(parseConfigString(text, source), source, opts));
    } catch (err) {
      add(err);
    }
  });
  for (const vm of file?.vms ?? []) {
    try {
      specs.push(buildVmSpec(vm.pairs, `vms #${vm.index}`, opts));
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      problems.push(`config file '${file!.path}': vms #${vm.index} (${vm.label}): ${err.message}`);
    }
  }
  let vms = specs;
  try {
    vms = distinctVms(specs);
  } catch (err) {
    add(err);
  }
  try {
    checkStopMode(factory, settings.mode);
  } catch (err) {
    add(err);
  }
  checked.push(`${vms.length} VM${vms.length === 1 ? "" : "s"} (${factory.name} backend)`);

  // 3. --persistdb: an existing database is opened (locked, corrupt, newer?) and closed; none is created.
  if (settings.persistdb !== undefined) {
    const problem = persistdbProblem(settings.persistdb);
    if (problem !== null) problems.push(problem);
    else checked.push(`--persistdb ${settings.persistdb}`);
  }

  // 4. The backend: preflight, connect, resolve each VM; then closed.
  await checkBackend(factory, settings, vms, problems, checked);

  // 5. The addresses: bound and released (not when systemd passes the sockets).
  if (process.env.LISTEN_FDS !== undefined && process.env.LISTEN_FDS !== "") {
    checked.push("the sockets systemd passes (LISTEN_FDS; not bound here)");
  } else {
    const dns = await bindProblem(settings.bind, settings.listen, true, "-l");
    if (dns !== null) problems.push(dns);
    else checked.push(`DNS on ${hostPort(settings.bind, settings.listen)}`);
  }
  if (settings.http !== undefined) {
    const http = await bindProblem(settings.http.host, settings.http.port, false, "--http");
    if (http !== null) problems.push(http.replace(/^cannot listen on TCP/, "cannot listen on HTTP (--http)"));
    else checked.push(`--http ${hostPort(settings.http.host, settings.http.port)}`);
  }
  return { problems, checked };
}

async function checkBackend(
  factory: BackendFactory,
  settings: Settings,
  specs: readonly VmSpec[],
  problems: string[],
  checked: string[],
): Promise<void> {
  // Quiet: the backend's info lines ("Connecting to ...") are a start's, not a check's.
  const log = createLogger({ level: "error", format: settings.logFormat });
  const options = {
    connect: settings.connect,
    stateDir: settings.stateDir,
    settings: settings.raw,
    log,
    clock: systemClock,
  };
  const backend = factory.create(options);
  // VMs the preflight found a problem with are not resolved too: the same problem, said once.
  const failed = new Set<string>();
  let resolved = 0;
  let reached = false;
  try {
    try {
      await runPreflight(backend, specs);
    } catch (err) {
      for (const line of describeErrorLines(err)) problems.push(line);
      if (!(err instanceof PreflightError)) return;
      for (const p of err.problems) {
        if (p instanceof ConfigError && p.vm !== undefined) failed.add(p.vm);
        else if (p instanceof UsageError) return; // --state-dir and the like: the backend cannot run
      }
    }
    // -c's host, then each connect= host (reached as a start would, each with its VMs).
    const defaultUri = factory.hosts?.defaultUri(options) ?? settings.connect;
    const byHost = new Map<string, VmSpec[]>([[defaultUri, []]]);
    for (const spec of specs) {
      const uri = factory.hosts === undefined ? defaultUri : (spec.connect ?? defaultUri);
      byHost.set(uri, [...(byHost.get(uri) ?? []), spec]);
    }
    for (const [uri, vms] of byHost) {
      const isDefault = uri === defaultUri;
      if (!isDefault && vms.every((v) => failed.has(v.label))) continue;
      const host = isDefault ? backend : factory.create(hostOptions(options, uri));
      try {
        try {
          await host.connect();
        } catch (err) {
          const whose = isDefault ? "" : ` (connect= of ${vms.map((v) => `VM '${v.label}'`).join(", ")})`;
          problems.push(
            factory.connects
              ? `cannot reach the ${factory.name} backend at ${redactUri(uri)}${whose}: ${describeError(err)}`
              : describeError(err),
          );
          if (isDefault) return;
          continue;
        }
        if (isDefault) reached = true;
        if (factory.connects) checked.push(`${factory.name} at ${redactUri(uri)}`);
        for (const spec of vms) {
          if (failed.has(spec.label)) continue;
          try {
            await host.resolve(spec);
            resolved++;
          } catch (err) {
            problems.push(describeError(err));
          }
        }
      } finally {
        if (!isDefault) await host.close().catch(() => undefined);
      }
    }
  } finally {
    if (reached && specs.length > 0)
      checked.push(`${resolved} of ${specs.length} VMs resolved by the backend`);
    await backend.close().catch(() => undefined);
  }
}

function persistdbProblem(given: string): string | null {
  let isDir = false;
  try {
    isDir = statSync(given).isDirectory();
  } catch {
    // not there yet
  }
  const path = isDir ? join(given, "jitsu.db") : given;
  if (existsSync(path)) {
    try {
      SqliteStore.open(path).close();
      return null;
    } catch (err) {
      return describeError(err);
    }
  }
  const dir = dirname(resolve(path));
  if (!existsSync(dir)) return `option '--persistdb': the directory '${dir}' does not exist; create it first`;
  try {
    accessSync(dir, constants.W_OK | constants.X_OK);
    return null;
  } catch (err) {
    return `option '--persistdb': jitsu cannot create ${path} (${(err as { code?: string }).code ?? describeError(err)})`;
  }
}

/** Binds TCP (and UDP for DNS) at host:port and releases them; the ListenError text, or null. */
async function bindProblem(host: string, port: number, udp: boolean, option: string): Promise<string | null> {
  if (udp) {
    const sock = createSocket(host.includes(":") ? "udp6" : "udp4");
    const err = await new Promise<Error | null>((done) => {
      sock.once("error", done);
      sock.bind({ port, address: host, exclusive: true }, () => done(null));
    });
    await new Promise<void>((done) => {
      try {
        sock.close(() => done());
      } catch {
        done();
      }
    });
    if (err !== null) return describeError(ListenError.of("UDP", host, port, err, option));
  }
  const srv = createServer();
  const err = await new Promise<Error | null>((done) => {
    srv.once("error", done);
    srv.listen({ host, port, exclusive: true }, () => done(null));
  });
  await new Promise<void>((done) => (srv.listening ? srv.close(() => done()) : done()));
  return err === null ? null : describeError(ListenError.of("TCP", host, port, err, option));
}

function hostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}
