/**
 * Every example in README.md and src/**\/README.md works when pasted (issue 17).
 *
 * The shell blocks (```sh) are read as a reader's shell reads them: `\` +
 * newline continues a line and bash itself splits each `jitsu ...` command
 * into words. Then:
 *
 * 1. Parse, for every `jitsu ...` command (and `jitsu -...` code span, and
 *    config file block with `vms`): the real option parser (`parseArgs`), the
 *    CONFIG strings against the chosen backend's keys and capabilities
 *    (`buildSpecs`, `--config` files), `-m` against the backend's stop modes,
 *    and the backend's `-c` parsing (`factory.create`, which connects to
 *    nothing). `--config PATH` reads the README's YAML block that starts with
 *    `# PATH`. Nothing starts; files the CONFIG names (kernels, disks) need not
 *    exist.
 * 2. Run, for the commands that can run here (the process backend; libvirt's
 *    test driver, `-c test:///...`, through a private libvirtd started for it
 *    (`-c` pointed at its socket); a backend whose `-c` is on loopback and
 *    served by a command the same section starts with `&`, such as the XenAPI
 *    double): jitsu is started for real, with only what a reader on another
 *    machine changes replaced, namely
 *    - `-l` (DNS), the ports of `ready=`, `--http`, `http.server` and the
 *      like: free loopback ports, the same in every line of the example;
 *    - `-f` → `0.0.0.0` (never this machine's resolver), `-b` → 127.0.0.1,
 *      `-p` dropped, `--state-dir` and `--persistdb` → a temp dir, plus
 *      `--stop-on-exit`;
 *    - `--config PATH` → the README's block for PATH in a temp file.
 *    A managed name is resolved with dig and must be answered with its
 *    address (any address when the backend discovers it; for a VM with
 *    `hold=` ports, which that first query summons, its hold address:
 *    `hold_address=`, else `--hold-address`, else the `-b` address, and the
 *    `hold=` ports are free loopback ports like the others); then the `dig`,
 *    `host`, `curl` (with `| jq`, `| grep`) and `kill -HUP $(pidof jitsu)`
 *    lines after the command, up to the file's next jitsu command, run
 *    (dig at jitsu's port; `$(pidof jitsu)` must find it and is replaced by
 *    its pid, never another jitsu on the machine) and must succeed, and show
 *    the output the README shows after their `$ ` prompt (numbers and times
 *    aside; a JSON document shown over several lines is compared whole, key
 *    by key in order); a comment saying
 *    something `logs "X"` or `prints "X"` must be true of jitsu's or the
 *    helpers' output. jitsu must then stop cleanly on SIGTERM.
 *
 * The other commands (libvirt, Xen, XAPI, QEMU on real hosts) are parse-only:
 * the last test lists them with the reason.
 */
import assert from "node:assert/strict";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { basename, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { after, describe, it } from "node:test";
import { findBackend } from "../../src/backends/index.js";
import { parseArgs } from "../../src/cli/command.js";
import type { Settings } from "../../src/cli/options.js";
import { checkSettings } from "../../src/cli/run.js";
import { systemClock } from "../../src/clock/index.js";
import type { VmSpec } from "../../src/config/index.js";
import { silentLogger } from "../../src/log/index.js";
import { PrivateLibvirtd } from "../doubles/libvirtd.js";
import { dig, freePort, run, startCli, tempDir, type CliProcess } from "../support/index.js";
import { readMarkdown, shellCommands, type Block } from "./markdown.js";
import { shellWords } from "./shell.js";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));

function readmes(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir)) {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) out.push(...readmes(path));
    else if (entry === "README.md") out.push(path);
  }
  return out;
}

const FILES = [join(ROOT, "README.md"), ...readmes(join(ROOT, "src")).sort()];

/** Blocks a reader pastes into a shell. */
const SHELL_LANGS = new Set(["sh", "bash", "shell", "console"]);
/** `jitsu`, `sudo jitsu`, `npx jitsu`, `node dist/src/cli/main.js`, after `NAME=value` assignments. */
const JITSU =
  /^(?:\w+=\S*\s+)*(?:sudo\s+(?:-\S+\s+)*)?(?:npx\s+)?(?:jitsu|node\s+dist\/src\/cli\/main\.js)(?:\s|$)/;

type Kind = "jitsu" | "helper" | "query" | "shell" | "env" | "other";

interface Command {
  readonly file: string;
  readonly line: number;
  readonly text: string;
  readonly output: readonly string[];
  readonly section: string;
  readonly kind: Kind;
}

function kindOf(text: string): Kind {
  const t = text.trim();
  if (JITSU.test(t)) return "jitsu";
  if (/(^|[^&])&\s*(#.*)?$/.test(t)) return "helper";
  if (/^(dig|host)\s/.test(t)) return "query";
  if (/^(curl|kill)\s/.test(t)) return "shell";
  if (/^export\s+\w+=/.test(t)) return "env";
  return "other";
}

interface Readme {
  readonly file: string;
  readonly commands: readonly Command[];
  /** Code spans such as `jitsu -x xapi ...` in the prose. */
  readonly inline: readonly Command[];
  /** Config file blocks: `# PATH` first line → text. */
  readonly configFiles: ReadonlyMap<string, string>;
  /** YAML/JSON blocks with `vms` (config files), parse-checked. */
  readonly configBlocks: readonly Block[];
  /** Untagged blocks that hold a jitsu command (they must be tagged ```sh to be tested). */
  readonly untagged: readonly Block[];
}

function readReadme(path: string): Readme {
  const file = relative(ROOT, path);
  const md = readMarkdown(path);
  const commands: Command[] = [];
  const configFiles = new Map<string, string>();
  const configBlocks: Block[] = [];
  const untagged: Block[] = [];
  for (const block of md.blocks) {
    if (SHELL_LANGS.has(block.lang)) {
      for (const c of shellCommands(block)) {
        commands.push({ file, ...c, section: block.section, kind: kindOf(c.text) });
      }
    } else if (["yaml", "yml", "json"].includes(block.lang)) {
      const text = block.lines.join("\n");
      if (/^vms\s*:|"vms"\s*:/m.test(text)) configBlocks.push(block);
      const named = /^#\s*(\/\S+)/.exec(block.lines[0] ?? "");
      if (named !== null) configFiles.set(named[1]!, text);
    } else if (block.lang === "" && block.lines.some((l) => JITSU.test(l.replace(/^\$ /, "").trim()))) {
      untagged.push(block);
    }
  }
  const inline = md.inline
    .filter((s) => /^(sudo\s+(-\S+\s+)*)?jitsu\s+-/.test(s.text) && !/--help|--version/.test(s.text))
    .map((s) => ({
      file,
      line: s.line,
      text: s.text,
      output: [],
      section: s.section,
      kind: "jitsu" as const,
    }));
  return { file, commands, inline, configFiles, configBlocks, untagged };
}

const READMES = FILES.map(readReadme);

const scratch = mkdtempSync(join(tmpdir(), "jitsu-readme-"));
after(() => rmSync(scratch, { recursive: true, force: true }));

/** jitsu's arguments in a `jitsu ...` command line, as the shell passes them. */
function jitsuArgs(
  text: string,
  sectionEnv: Readonly<Record<string, string>> = {},
): { args: string[]; env: Record<string, string> } {
  const words = shellWords(text, sectionEnv);
  const env: Record<string, string> = {};
  while (words.length > 0 && /^\w+=/.test(words[0]!)) {
    const [name, ...value] = words.shift()!.split("=");
    env[name!] = value.join("=");
  }
  if (words[0] === "sudo") {
    words.shift();
    while (words[0]?.startsWith("-") === true) words.shift(); // sudo's own options
  }
  if (words[0] === "npx") words.shift();
  if (words[0] === "node") words.shift();
  words.shift(); // jitsu, or dist/src/cli/main.js
  return { args: words, env };
}

/** The value of option `names` in `args` (`-x V`, `--backend V`, `--backend=V`), if given. */
function optionValue(args: readonly string[], names: readonly string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (names.includes(a)) return args[i + 1];
    const eq = names.find((n) => n.startsWith("--") && a.startsWith(`${n}=`));
    if (eq !== undefined) return a.slice(eq.length + 1);
  }
  return undefined;
}

/** `args` without the options `names` (and their values). */
function withoutOptions(args: readonly string[], names: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (names.includes(a)) i++;
    else if (!names.some((n) => n.startsWith("--") && a.startsWith(`${n}=`))) out.push(a);
  }
  return out;
}

/** `--config PATH` pointed at a temp copy of the README's block for PATH (with `edit` applied). */
function withConfigFile(
  args: readonly string[],
  readme: Readme,
  dir: string,
  edit: (text: string) => string = (t) => t,
): string[] {
  const path = optionValue(args, ["--config"]);
  if (path === undefined) return [...args];
  const text = readme.configFiles.get(path);
  assert.ok(
    text !== undefined,
    `--config ${path}: no YAML/JSON block in ${readme.file} starts with '# ${path}'`,
  );
  const copy = join(dir, basename(path));
  writeFileSync(copy, edit(text));
  return [...withoutOptions(args, ["--config"]), "--config", copy];
}

interface Parsed {
  readonly settings: Settings;
  readonly specs: readonly VmSpec[];
}

/**
 * What jitsu does with its command line before it connects to anything: the
 * options, every VM (CONFIG strings and --config file) against the backend's
 * keys and capabilities, the stop mode, and the backend's reading of -c.
 */
function parseCommand(args: readonly string[]): Parsed {
  const settings = parseArgs(args);
  const { factory, specs } = checkSettings(settings);
  factory.create({
    connect: settings.connect,
    stateDir: settings.stateDir,
    settings: settings.raw,
    log: silentLogger(),
    clock: systemClock,
  });
  return { settings, specs };
}

/** libvirt's test driver: no hypervisor, only a libvirtd (a private one here). */
const TEST_DRIVER = /^test:\/\/\//;

function where(c: Command): string {
  return `${c.file}:${c.line}`;
}

/** Why a command is parse-checked only, or null when it runs here. */
function parseOnlyReason(parsed: Parsed, helpers: readonly Command[]): string | null {
  const { settings } = parsed;
  if (settings.backend === "process") return null;
  const factory = findBackend(settings.backend);
  if (settings.backend === "libvirt" && TEST_DRIVER.test(settings.connect)) return null;
  if (factory.connects) {
    let host = "";
    try {
      host = new URL(settings.connect).hostname;
    } catch {
      // not a URL with a host
    }
    if (/^(127\.|localhost$|\[::1\]$)/.test(host) && helpers.length > 0) return null;
    if (settings.backend === "docker")
      return "docker: needs a Docker or Podman engine (started by test/backends/docker, not here)";
    return `${settings.backend}: needs the hypervisor at ${settings.connect}`;
  }
  if (settings.backend === "libxl") return "libxl: needs Xen (dom0, xl)";
  if (settings.backend === "qemu") return "qemu: boots a guest kernel that is not on this machine";
  return `${settings.backend}: not run here`;
}

// ------------------------------------------------------------------ running

/** Ports a reader would change, as written in a text: DNS, ready probes, --http, servers. */
const PORT_PATTERNS = [
  /\btcp:(?:[\d.]+:)?(\d{4,5})\b/g,
  /\b\d{1,3}(?:\.\d{1,3}){3}:(\d{4,5})\b/g,
  /\blocalhost:(\d{4,5})\b/g,
  /(?:^|\s)(?:-l|--listen|-p|--port)[\s=]+(\d{4,5})\b/g,
  /^\s*listen:\s*(\d{4,5})\s*$/gm,
  /\bhttp\.server\s+(\d{4,5})\b/g,
  /\bhold=(\d{4,5})\b/g,
  /\bhold=\d{4,5}:(\d{4,5})\b/g,
];

/** A consistent replacement of every port in `texts` by a free loopback port. */
async function portMap(texts: readonly string[]): Promise<Map<string, string>> {
  const ports = new Map<string, string>();
  for (const text of texts) {
    for (const pattern of PORT_PATTERNS) {
      for (const m of text.matchAll(pattern)) {
        if (Number(m[1]) >= 1024 && !ports.has(m[1]!)) ports.set(m[1]!, String(await freePort()));
      }
    }
  }
  return ports;
}

function replacePorts(text: string, ports: ReadonlyMap<string, string>): string {
  let out = text;
  for (const [from, to] of ports) out = out.replace(new RegExp(`(?<![\\w.])${from}(?!\\w)`, "g"), to);
  return out;
}

/** Resolves once something accepts TCP connections on 127.0.0.1:`port`. */
async function listening(port: number, ms: number, what: string): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ host: "127.0.0.1", port });
      s.once("connect", () => {
        s.destroy();
        resolve(true);
      });
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`${what} did not listen on 127.0.0.1:${port} within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function runShell(
  text: string,
  env: Record<string, string>,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      "bash",
      ["-o", "pipefail", "-c", text],
      { cwd: ROOT, env: { ...process.env, ...env }, timeout: 30_000, encoding: "utf8" },
      (err, stdout, stderr) =>
        resolve({ code: err === null ? 0 : typeof err.code === "number" ? err.code : 1, stdout, stderr }),
    );
  });
}

/** `text` as compact JSON, or undefined if it is not one JSON document. */
function jsonText(text: string): string | undefined {
  try {
    return JSON.stringify(JSON.parse(text));
  } catch {
    return undefined;
  }
}

/** A README's output line and a real one, compared without numbers, times and spacing; JSON by value. */
function normalize(line: string): string {
  let text = line.trim();
  try {
    text = JSON.stringify(JSON.parse(text));
  } catch {
    text = text.replace(/\s+/g, " ");
  }
  return text.replace(/\d+(\.\d+)?/g, "N");
}

/** Every output line the README shows must be in the real output (JSON: one whole document or one per line). */
function checkOutput(c: Command, actual: string): void {
  if (c.output.length === 0) return;
  const lines = actual.split("\n").filter((l) => l.trim() !== "");
  const whole = jsonText(actual);
  // One JSON document over several lines: the same document, key for key, in the same order.
  const shown = c.output.length > 1 ? jsonText(c.output.join("\n")) : undefined;
  if (shown !== undefined) {
    assert.equal(
      whole === undefined ? undefined : normalize(whole),
      normalize(shown),
      `${where(c)}: the README shows another JSON document than the command printed:\n${actual}`,
    );
    return;
  }
  const seen = new Set([...lines.map(normalize), ...(whole === undefined ? [] : [normalize(whole)])]);
  for (const shown of c.output) {
    assert.ok(
      seen.has(normalize(shown)),
      `${where(c)}: the README shows '${shown}', the command printed:\n${actual}`,
    );
  }
}

/** Runs one README command that follows a running jitsu (DNS on `dnsPort`, main pid `pid`). */
async function followUp(
  c: Command,
  ports: ReadonlyMap<string, string>,
  dnsPort: number,
  cli: CliProcess,
  env: Record<string, string>,
): Promise<void> {
  const text = replacePorts(c.text, ports);
  if (c.kind === "query") {
    const words = shellWords(text, env);
    const tool = words.shift()!;
    // The server and port are jitsu's; the rest as written.
    const rest = withoutOptions(words, ["-p"]).filter((w) => !w.startsWith("@"));
    const args =
      tool === "dig"
        ? ["@127.0.0.1", "-p", String(dnsPort), "+time=10", "+tries=1", ...rest]
        : ["-p", String(dnsPort), "-W", "10", ...rest.filter((w) => !/^[\d.:]+$/.test(w)), "127.0.0.1"];
    const res = await run(tool, args, 30_000);
    assert.equal(res.code, 0, `${where(c)}: ${tool} ${args.join(" ")} failed:\n${res.stdout}${res.stderr}`);
    if (tool === "dig" && !args.includes("+short")) {
      assert.match(res.stdout, /status: NOERROR/, `${where(c)}: ${res.stdout}`);
    }
    checkOutput(c, res.stdout);
    return;
  }
  let command = text;
  if (/\$\(pidof jitsu\)/.test(text)) {
    const pids = (await run("pidof", ["jitsu"])).stdout.trim().split(/\s+/).map(Number);
    assert.ok(
      pids.includes(cli.child.pid!),
      `${where(c)}: pidof jitsu does not find jitsu (${pids.join(" ")})`,
    );
    // Only ours: other jitsus on this machine are none of the test's business.
    command = text.replace(/\$\(pidof jitsu\)/g, String(cli.child.pid));
  }
  const reloadsBefore = (cli.output().match(/Reloaded '|Reload rejected/g) ?? []).length;
  const res = await runShell(command, env);
  assert.equal(res.code, 0, `${where(c)}: '${command}' failed (${res.code}):\n${res.stdout}${res.stderr}`);
  checkOutput(c, res.stdout);
  if (/kill\s+-(HUP|SIGHUP|1)\b/.test(command)) {
    // SIGHUP reloads --config: wait for the outcome, which must be a reload.
    const until = Date.now() + 10_000;
    while ((cli.output().match(/Reloaded '|Reload rejected/g) ?? []).length === reloadsBefore) {
      assert.ok(Date.now() < until, `${where(c)}: no reload after SIGHUP:\n${cli.output()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.doesNotMatch(cli.output(), /Reload rejected/, `${where(c)}: ${cli.output()}`);
  }
}

/**
 * A comment such as `# jitsu logs "[hello.localhost] hello"` or `# the double
 * prints "..."` is a claim too: the quoted text must appear in what jitsu or
 * the section's helpers print (within 5 s).
 */
async function saidInComment(c: Command, output: () => string): Promise<void> {
  const claim = /#.*\b(?:logs|prints)\s+"([^"]+)"/.exec(c.text)?.[1];
  if (claim === undefined) return;
  const until = Date.now() + 5_000;
  while (!output().includes(claim)) {
    assert.ok(
      Date.now() < until,
      `${where(c)}: the comment says "${claim}" is printed; it was not:\n${output()}`,
    );
    await new Promise((r) => setTimeout(r, 50));
  }
}

function stopHelper(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill("SIGTERM");
  });
}

/**
 * Runs `c` (a jitsu command) for real with the section's helpers before it and
 * its follow-up commands after it (see the header for what is replaced).
 */
async function runSession(
  readme: Readme,
  c: Command,
  helpers: readonly Command[],
  followUps: readonly Command[],
  env: Record<string, string>,
): Promise<void> {
  const dir = await tempDir("jitsu-readme-run-");
  const children: ChildProcess[] = [];
  let cli: CliProcess | undefined;
  let libvirtd: PrivateLibvirtd | undefined;
  let helperOutput = "";
  try {
    const { args: written } = jitsuArgs(c.text, env);
    const configPath = optionValue(written, ["--config"]);
    const configText = configPath === undefined ? "" : (readme.configFiles.get(configPath) ?? "");
    const ports = await portMap([
      c.text,
      configText,
      ...helpers.map((h) => h.text),
      ...followUps.map((f) => f.text),
    ]);

    for (const h of helpers) {
      const text = replacePorts(h.text, ports).replace(/&\s*(#.*)?$/, "");
      const child = spawn("bash", ["-c", `exec ${text}`], {
        cwd: ROOT,
        env: { ...process.env, ...env },
        stdio: ["ignore", "pipe", "pipe"],
      });
      child.stdout.on("data", (d: Buffer) => (helperOutput += d.toString()));
      child.stderr.on("data", (d: Buffer) => (helperOutput += d.toString()));
      children.push(child);
      for (const m of text.matchAll(/(?:--port|-p|-l)[\s=]+(\d+)/g)) {
        await listening(Number(m[1]), 20_000, `${where(h)} (${text})`);
      }
    }

    const { args: substituted, env: assigned } = jitsuArgs(replacePorts(c.text, ports), env);
    let args = withConfigFile(substituted, readme, dir.path, (t) => replacePorts(t, ports));
    const parsed = parseCommand(args);
    const dnsPort = parsed.settings.listen >= 1024 ? parsed.settings.listen : await freePort();
    if (parsed.settings.backend === "libvirt" && TEST_DRIVER.test(parsed.settings.connect)) {
      libvirtd = new PrivateLibvirtd();
      await libvirtd.start();
      args = [...withoutOptions(args, ["-c", "--connect"]), "-c", libvirtd.uri(parsed.settings.connect)];
    }
    args = [
      ...withoutOptions(args, [
        "-l",
        "--listen",
        "-f",
        "--forwarder",
        "-p",
        "--port",
        "-b",
        "--bind",
        "--state-dir",
        "--persistdb",
      ]),
      ...["-l", String(dnsPort), "-f", "0.0.0.0", "-b", "127.0.0.1", "--state-dir", dir.path],
      ...(parsed.settings.persistdb === undefined ? [] : ["--persistdb", join(dir.path, "state.db")]),
      ...(parsed.settings.stopOnExit ? [] : ["--stop-on-exit"]),
    ];
    cli = startCli(args, { ...env, ...assigned });
    await cli.waitFor(/Starting server on|Serving DNS with/, 30_000);

    // The first VM answered with its IPv4 addresses, or any address when the backend finds it.
    const vm = parsed.specs.find((s) => s.ips.length === 0 || s.ips.some((ip) => !ip.includes(":")));
    assert.ok(vm !== undefined, `${where(c)}: no VM to ask for an A record`);
    const answer = await dig(dnsPort, [vm.dns[0]!, "A"]);
    assert.equal(answer.status, "NOERROR", `${where(c)}: dig ${vm.dns[0]}:\n${answer.raw}\n${cli.output()}`);
    const addresses = answer.answers.filter((a) => a.type === "A").map((a) => a.data);
    if (vm.hold.length > 0) {
      // Not ready yet (this query summons it): answered at once with the hold address (src/activator).
      const holdAddress = vm.holdAddress ?? parsed.settings.holdAddress ?? "127.0.0.1";
      assert.deepEqual(addresses, [holdAddress], `${where(c)}: dig ${vm.dns[0]} (hold=):\n${answer.raw}`);
    } else if (vm.ips.length === 0)
      assert.ok(addresses.length > 0, `${where(c)}: no address:\n${answer.raw}`);
    else {
      assert.deepEqual(
        addresses,
        vm.ips.filter((ip) => !ip.includes(":")),
        `${where(c)}: dig ${vm.dns[0]}:\n${answer.raw}`,
      );
    }
    ranLines.push(`${where(c)}: jitsu, and dig ${vm.dns[0]} -> ${addresses.join(" ")}`);

    for (const f of followUps) {
      await followUp(f, ports, dnsPort, cli, env);
      await saidInComment(f, () => cli!.output() + helperOutput);
      ranLines.push(`${where(f)}: ${f.text.split("\n")[0]}`);
    }

    const code = await cli.stop("SIGTERM");
    assert.equal(code, 0, `${where(c)}: jitsu did not exit cleanly on SIGTERM:\n${cli.output()}`);
  } finally {
    await cli?.stop("SIGKILL");
    for (const child of children) await stopHelper(child);
    await libvirtd?.destroy();
    await dir.remove();
  }
}

// ------------------------------------------------------------------ the tests

const parseOnly: string[] = [];
const notRun: string[] = [];
/** Each command that ran: jitsu commands and their follow-ups. */
const ranLines: string[] = [];
let ran = 0;

for (const readme of READMES) {
  if (
    readme.commands.length + readme.inline.length + readme.configBlocks.length + readme.untagged.length ===
    0
  ) {
    continue;
  }
  describe(readme.file, () => {
    for (const block of readme.untagged) {
      it(`line ${block.line}: a block with a jitsu command is tagged sh`, () => {
        assert.fail(`${readme.file}:${block.line}: tag this block \`\`\`sh so that its commands are tested`);
      });
    }

    for (const block of readme.configBlocks) {
      it(`line ${block.line}: the ${block.lang} config file parses`, () => {
        const path = join(scratch, `config-${block.line}.${block.lang}`);
        writeFileSync(path, block.lines.join("\n"));
        try {
          parseCommand(["--config", path]);
        } catch (err) {
          assert.fail(`${readme.file}:${block.line}: ${(err as Error).message}`);
        }
      });
    }

    for (const c of readme.inline) {
      it(`line ${c.line}: \`${c.text.slice(0, 60)}\` parses`, () => {
        try {
          parseCommand(withConfigFile(jitsuArgs(c.text).args, readme, scratch));
        } catch (err) {
          assert.fail(`${where(c)}: ${(err as Error).message}`);
        }
        parseOnly.push(`${where(c)} (a code span in the text)`);
      });
    }

    const commands = readme.commands;
    for (let i = 0; i < commands.length; i++) {
      const c = commands[i]!;
      if (c.kind !== "jitsu") {
        // dig/host/curl/kill after a jitsu command run with it (below); helpers
        // before one start with it; exports go into its environment. Anything else is not run.
        const afterJitsu = commands.slice(0, i).some((p) => p.kind === "jitsu");
        if (c.kind === "other" || ((c.kind === "query" || c.kind === "shell") && !afterJitsu)) {
          notRun.push(`${where(c)}: ${c.text.split("\n")[0]}`);
        }
        continue;
      }
      const sameSection = (p: Command): boolean => p.section === c.section;
      const previousJitsu = commands.slice(0, i).findLastIndex((p) => p.kind === "jitsu" && sameSection(p));
      const helpers = commands
        .slice(previousJitsu + 1, i)
        .filter((p) => p.kind === "helper" && sameSection(p));
      const env: Record<string, string> = {};
      for (const p of commands.slice(0, i).filter((p) => p.kind === "env" && sameSection(p))) {
        const [name, ...value] = shellWords(p.text.replace(/^export\s+/, ""))[0]!.split("=");
        env[name!] = value.join("=");
      }
      // What follows it up to the next jitsu command of the file (a later section may query it).
      const nextJitsu = commands.findIndex((p, j) => j > i && p.kind === "jitsu");
      const followUps = commands
        .slice(i + 1, nextJitsu === -1 ? undefined : nextJitsu)
        .filter((p) => p.kind === "query" || p.kind === "shell");

      let parsed: Parsed | undefined;
      it(`line ${c.line}: ${c.text.split("\n")[0]!.slice(0, 70)} parses`, () => {
        try {
          parsed = parseCommand(withConfigFile(jitsuArgs(c.text, env).args, readme, scratch));
        } catch (err) {
          assert.fail(`${where(c)}: ${(err as Error).message}`);
        }
      });
      it(`line ${c.line}: runs here, or is listed as parse-only`, { timeout: 120_000 }, async () => {
        if (parsed === undefined) return; // the parse test failed
        const reason = parseOnlyReason(parsed, helpers);
        if (reason !== null) {
          parseOnly.push(`${where(c)} (${reason})`);
          for (const f of followUps)
            notRun.push(`${where(f)}: ${f.text.split("\n")[0]} (after a parse-only command)`);
          return;
        }
        await runSession(readme, c, helpers, followUps, env);
        ran++;
      });
    }
  });
}

describe("README examples", () => {
  it("were found, and some ran; lists the parse-only ones", (t) => {
    const jitsuCommands = READMES.flatMap((r) => [...r.commands, ...r.inline]).filter(
      (c) => c.kind === "jitsu",
    );
    assert.ok(jitsuCommands.length >= 15, `only ${jitsuCommands.length} jitsu commands found`);
    assert.ok(ran >= 3, `only ${ran} examples ran`);
    t.diagnostic(`${ran} jitsu commands ran, with what followed them:`);
    for (const r of ranLines) t.diagnostic(`  ${r}`);
    t.diagnostic("parse-only:");
    for (const p of parseOnly) t.diagnostic(`  ${p}`);
    t.diagnostic("not run (set-up, other tools, or after a parse-only command):");
    for (const n of notRun) t.diagnostic(`  ${n}`);
  });
});
