/**
 * The command line: the original Jitsu's options (seed-compatible) plus ours,
 * parsed with commander into typed Settings.
 */
import { readFileSync } from "node:fs";
import { Command } from "commander";
import { BACKENDS } from "../backends/index.js";
import { configHelp } from "./help.js";
import { mergeOptions, readConfigFile } from "../config/index.js";
import { ConfigError, UsageError } from "../errors/index.js";
import { OPTIONS, fileOptionSpecs, kebabKeys, toSettings, type Settings } from "./options.js";

export function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as {
    version: string;
  };
  return pkg.version;
}

export function buildCommand(): Command {
  const program = new Command("jitsu")
    .description(
      "A forwarding DNS server that summons virtual machines on demand: when a managed name is resolved, jitsu makes sure the VM behind it runs and is ready, then answers with its address. VMs idle for 2 x TTL are stopped.",
    )
    .usage("[OPTIONS] [CONFIG...]")
    .argument("[CONFIG...]", "one VM per CONFIG string: key=value,key=value,... (see CONFIG below)")
    .version(version(), "--version", "Show version information.")
    .helpOption("--help", "Show this help.")
    .allowExcessArguments(false)
    .showSuggestionAfterError(true);
  for (const opt of OPTIONS) {
    const doc = opt.absent === undefined ? opt.doc : `${opt.doc} (absent=${opt.absent})`;
    program.option(opt.flags, doc);
  }
  program.addHelpText("after", () => configHelp(BACKENDS));
  return program;
}

/** Parses argv (without node and script) into settings; throws UsageError/CommanderError. */
export function parseArgs(argv: readonly string[]): Settings {
  const program = buildCommand().exitOverride();
  program.configureOutput({ writeErr: () => undefined, writeOut: (s) => process.stdout.write(s) });
  // The original accepted --help=FMT (pager, plain, groff); we print plain text for all.
  const args = argv.map((a) => (a.startsWith("--help=") ? "--help" : a));
  program.parse(args, { from: "user" });
  const given = kebabKeys(program.opts());
  // --config FILE: the file's options, with the command line's on top.
  const file = typeof given.config === "string" ? readConfigFile(given.config, fileOptionSpecs()) : undefined;
  try {
    return toSettings(file === undefined ? given : mergeOptions(file.options, given), program.args, file);
  } catch (err) {
    // A bad value that came from the file: say which file.
    const name = err instanceof UsageError ? err.option?.replace(/^--/, "") : undefined;
    if (file !== undefined && name !== undefined && given[name] === undefined && name in file.options) {
      throw new ConfigError(`config file '${file.path}': ${(err as Error).message}`, { cause: err });
    }
    throw err;
  }
}
