/**
 * `jitsu status|start|stop|check`: the subcommands, recognised only as the
 * first argument (a CONFIG string always has a '=', so the seed's
 * `jitsu [OPTIONS] CONFIG...` is unchanged). status/start/stop talk to a
 * running jitsu's --http endpoint (remote.ts); check runs check.ts. Each
 * returns the exit code: 0 fine, 1 a problem, 2 a usage error.
 */
import { Command, CommanderError } from "commander";
import { readConfigFile } from "../config/index.js";
import { describeError, JitsuError } from "../errors/index.js";
import { runCheck } from "./check.js";
import type { Subcommand } from "./command.js";
import { fileOptionSpecs, parseHttpAddress } from "./options.js";
import { RemoteError, adminAction, fetchStatus, selectVms, showEndpoint, type Endpoint } from "./remote.js";
import { formatStatus, useColour } from "./status-table.js";

/** Where `jitsu status` looks when neither --http, JITSU_HTTP nor --config says (the README's example port). */
export const DEFAULT_HTTP = "127.0.0.1:9053";

const HELP: Record<Exclude<Subcommand, "check">, string> = {
  status:
    "Show the VMs of a running jitsu (GET /status of its --http endpoint): one row each, or the JSON with --json. NAME (a VM's name, uuid or DNS name) limits the table to those VMs.",
  start:
    "Start (or resume) a VM of a running jitsu now, through its admin endpoint (needs its --http-token).",
  stop: "Stop a VM of a running jitsu now with its -m mode, through its admin endpoint (needs its --http-token).",
};

function remoteCommand(name: Exclude<Subcommand, "check">): Command {
  const cmd = new Command(`jitsu ${name}`)
    .description(HELP[name])
    .helpOption("--help", "Show this help.")
    .option(
      "--http <ADDR:PORT>",
      `jitsu's --http address (default: $JITSU_HTTP, the config file's http:, else ${DEFAULT_HTTP})`,
    )
    .option("--config <FILE>", "Take --http and --http-token from jitsu's config file.")
    .showSuggestionAfterError(true)
    .allowExcessArguments(false);
  if (name === "status") {
    cmd.usage("[--http ADDR:PORT] [--json] [NAME...]").argument("[NAME...]", "only these VMs");
    cmd.option("--json", "Print /status as JSON (with NAME: only those VMs).");
    cmd.option("--timeout <SECONDS>", "How long to wait for the answer (default 10).");
  } else {
    cmd
      .usage("[--http ADDR:PORT] [--http-token TOKEN] NAME")
      .argument("<NAME>", "the VM: its name, uuid or one of its DNS names")
      .option(
        "--http-token <TOKEN>",
        "The admin token (default: $JITSU_HTTP_TOKEN, the config file's http-token:).",
      )
      .option("--timeout <SECONDS>", "How long to wait for the VM (default 300).");
  }
  return cmd;
}

interface Target {
  readonly endpoint: Endpoint;
  readonly token: string | undefined;
}

function target(opts: Record<string, unknown>): Target {
  const file = typeof opts.config === "string" ? readConfigFile(opts.config, fileOptionSpecs()) : undefined;
  const fromFile = (key: string): string | undefined => {
    const v = file?.options[key];
    return typeof v === "string" ? v : undefined;
  };
  const env = (key: string): string | undefined => {
    const v = process.env[key];
    return v === undefined || v === "" ? undefined : v;
  };
  const [text, from] =
    typeof opts.http === "string"
      ? [opts.http, "from --http"]
      : env("JITSU_HTTP") !== undefined
        ? [env("JITSU_HTTP")!, "from JITSU_HTTP"]
        : fromFile("http") !== undefined
          ? [fromFile("http")!, `from ${file!.path}`]
          : [DEFAULT_HTTP, "the default address"];
  const { host, port } = parseHttpAddress(text);
  const token =
    typeof opts.httpToken === "string" ? opts.httpToken : (env("JITSU_HTTP_TOKEN") ?? fromFile("http-token"));
  return { endpoint: { host, port, from }, token };
}

function timeoutMs(text: unknown, fallback: number): number {
  if (typeof text !== "string") return fallback;
  const n = Number(text);
  if (!(n > 0 && n <= 86400))
    throw new RemoteError(`option '--timeout': expected seconds from 1 to 86400, got '${text}'`, 2);
  return n * 1000;
}

async function remote(name: Exclude<Subcommand, "check">, argv: readonly string[]): Promise<number> {
  const cmd = remoteCommand(name).exitOverride();
  cmd.configureOutput({ writeErr: () => undefined, writeOut: (s) => process.stdout.write(s) });
  cmd.parse(argv, { from: "user" });
  const opts = cmd.opts();
  const { endpoint, token } = target(opts);
  if (name === "status") {
    const status = await fetchStatus(endpoint, timeoutMs(opts.timeout, 10_000));
    const vms = selectVms(status.vms, cmd.args);
    if (opts.json === true) {
      const body = cmd.args.length === 0 ? status : { ...status, vms };
      process.stdout.write(`${JSON.stringify(body, null, 2)}\n`);
    } else {
      process.stdout.write(formatStatus(status, vms, useColour(process.stdout)));
    }
    return 0;
  }
  const vm = cmd.args[0]!;
  const result = await adminAction(endpoint, name, vm, token, timeoutMs(opts.timeout, 300_000));
  process.stdout.write(`VM '${result.vm}' is ${result.state} (${showEndpoint(endpoint)})\n`);
  return 0;
}

async function check(argv: readonly string[]): Promise<number> {
  const { problems, checked } = await runCheck(argv);
  for (const line of problems) process.stderr.write(`jitsu check: ${line}\n`);
  if (problems.length === 0) {
    process.stdout.write(`jitsu check: OK: ${checked.join("; ")}. Nothing was started.\n`);
    return 0;
  }
  process.stderr.write(
    `jitsu check: ${problems.length} problem${problems.length === 1 ? "" : "s"} found${
      checked.length === 0 ? "" : ` (fine: ${checked.join("; ")})`
    }. Nothing was started.\n`,
  );
  return 1;
}

/** Runs `jitsu NAME ARGS...`; resolves with the exit code. */
export async function runSubcommand(name: Subcommand, argv: readonly string[]): Promise<number> {
  try {
    return name === "check" ? await check(argv) : await remote(name, argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.exitCode === 0) return 0; // --help
      process.stderr.write(
        `jitsu ${name}: ${err.message.replace(/^error: /, "")} (see jitsu ${name} --help)\n`,
      );
      return 2;
    }
    process.stderr.write(`jitsu ${name}: ${describeError(err)}\n`);
    if (err instanceof RemoteError) return err.exitCode;
    if (err instanceof JitsuError && err.code === "ERR_USAGE") return 2;
    if (!(err instanceof JitsuError) && process.env.JITSU_DEBUG === "1") console.error(err);
    return 1;
  }
}
