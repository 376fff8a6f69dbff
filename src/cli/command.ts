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

/** The subcommands (src/cli/subcommands.ts), recognised only as the first argument. */
const SUBCOMMAND_NAMES = ["status", "start", "stop", "check"] as const;
export type Subcommand = (typeof SUBCOMMAND_NAMES)[number];

export function isSubcommand(word: string | undefined): word is Subcommand {
  return (SUBCOMMAND_NAMES as readonly (string | undefined)[]).includes(word);
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
  program.addHelpText(
    "after",
    () =>
      "\nCommands (the first argument; each has --help):\n" +
      "  jitsu check [OPTIONS] [CONFIG...]    check everything a start would, start nothing\n" +
      "  jitsu status [--http ADDR:PORT] [--json] [NAME...]\n" +
      "                                       the VMs of a running jitsu (its --http endpoint)\n" +
      "  jitsu start NAME, jitsu stop NAME    start or stop a VM now (--http-token or JITSU_HTTP_TOKEN)\n" +
      configHelp(BACKENDS),
  );
  return program;
}

/** Parses argv (without node and script) into settings; throws UsageError/CommanderError. */
export function parseArgs(argv: readonly string[]): Settings {
  const program = buildCommand().exitOverride();
  program.configureOutput({ writeErr: () => undefined, writeOut: (s) => process.stdout.write(s) });
  // The original accepted --help=FMT (pager, plain, groff); we print plain text for all.
  const args = argv.map((a) => (a.startsWith("--help=") ? "--help" : a));
  program.parse(args, { from: "user" });
  // `jitsu -x process status`: a subcommand must come first (its name is no CONFIG string).
  const misplaced = program.args.find((a) => isSubcommand(a));
  if (misplaced !== undefined)
    throw new UsageError(
      `'${misplaced}' is a command, and commands come first: jitsu ${misplaced} [OPTIONS]... (a CONFIG string is key=value,...)`,
    );
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
