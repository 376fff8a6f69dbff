/**
 * The xl domain configuration file (xl.cfg(5)) for one VM, generated from its
 * CONFIG keys. Disks use the documented xl-disk-configuration(5) form
 * `'format=raw, vdev=xvda, access=rw, target=/path'` (target last, as that
 * page asks), NICs the xl-network-configuration(5) form `'bridge=br0,script=...'`.
 */
import { readFileSync } from "node:fs";
import { isAbsolute, resolve } from "node:path";
import { ConfigError, describeError } from "../../errors/index.js";
import type { VmSpec } from "../../config/index.js";
import { fileProblem, missingReporter } from "../preflight.js";

const MIB = 1024 * 1024;
/** 4096 minus the longest "/local/domain/65535/rumprun/cfg" and its nul. */
const RUMPRUN_MAX = 4096 - "/local/domain/65535/rumprun/cfg".length - 1;

export interface DomainPlan {
  readonly name: string;
  /** The config file's text. */
  readonly text: string;
  /** Absolute path of the rumprun JSON, if any. */
  readonly rumprunConfig: string | undefined;
  readonly memoryMiB: number;
}

/** Characters that cannot go inside an xl.cfg string or a device spec without quoting rules we do not rely on. */
function checkPlain(spec: VmSpec, key: string, value: string, extra = ""): string {
  const bad = new RegExp(`["'\\\\\\n\\r${extra}]`);
  const m = bad.exec(value);
  if (m !== null) {
    throw new ConfigError(
      `value '${value}' contains '${m[0] === "\n" ? "\\n" : m[0]}', which cannot be passed to xl`,
      {
        vm: spec.label,
        key,
      },
    );
  }
  return value;
}

function absolutePath(spec: VmSpec, key: string, value: string, cwd: string): string {
  return checkPlain(spec, key, isAbsolute(value) ? value : resolve(cwd, value));
}

/**
 * Builds (and checks) the domain configuration; relative paths are taken from
 * `cwd`. With `problems` (the preflight), what is missing on this machine (the
 * kernel, disk and rumprun_config files, a rumprun_config that is not JSON) is
 * added there, every one, and the building goes on; other errors still throw.
 */
export function planDomain(spec: VmSpec, cwd: string = process.cwd(), problems?: ConfigError[]): DomainPlan {
  const o = spec.options;
  const missing = missingReporter(spec.label, problems);
  const name = checkPlain(spec, "name", o.requireStr("name"));
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name)) {
    throw new ConfigError(
      `'${name}' is not usable as a Xen domain name (letters, digits, '.', '_' and '-')`,
      {
        vm: spec.label,
        key: "name",
      },
    );
  }
  const kernel = absolutePath(spec, "kernel", o.requireStr("kernel"), cwd);
  const kernelProblem = fileProblem(kernel);
  if (kernelProblem !== null) missing(kernelProblem, "kernel");
  const bytes = o.sizeBytes("memory", 1024);
  if (bytes === undefined || bytes <= 0)
    throw new ConfigError("expected a size above 0", { vm: spec.label, key: "memory" });
  const memoryMiB = Math.ceil(bytes / MIB);
  const cmdline = o.str("cmdline");
  const uuid = o.str("uuid");
  if (uuid !== undefined && !/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(uuid)) {
    throw new ConfigError(`expected a UUID such as 6e696eb7-09f4-484c-981b-8d34efa0304d, got '${uuid}'`, {
      vm: spec.label,
      key: "uuid",
    });
  }

  const nics = o.all("nic").map((n) => checkPlain(spec, "nic", n, ",="));
  const scripts = o.all("script").map((s) => checkPlain(spec, "script", s, ","));
  if (scripts.length > nics.length) {
    throw new ConfigError(
      `${scripts.length} script(s) given for ${nics.length} nic(s); each script belongs to one nic, in order`,
      {
        vm: spec.label,
        key: "script",
      },
    );
  }
  // The original pairs NIC i with script i mod (number of scripts).
  const vifs = nics.map((bridge, i) => {
    const script = scripts.length === 0 ? undefined : scripts[i % scripts.length];
    return `'bridge=${bridge}${script === undefined ? "" : `,script=${script}`}'`;
  });

  const disks = o.tuples("disk").map(({ left, right }, i) => {
    const raw = o.all("disk")[i];
    if (left === undefined || right === undefined) {
      throw new ConfigError(`'${raw}' is not FILE@VDEV (e.g. images/data.iso@xvdb)`, {
        vm: spec.label,
        key: "disk",
      });
    }
    if (!/^[a-z]+[a-z0-9]*$/.test(right)) {
      throw new ConfigError(`'${right}' is not a virtual device name such as xvda, hda or sdb`, {
        vm: spec.label,
        key: "disk",
      });
    }
    const target = absolutePath(spec, "disk", left, cwd);
    const problem = fileProblem(target);
    if (problem !== null) missing(problem, "disk");
    return `'format=raw, vdev=${right}, access=rw, target=${target}'`;
  });

  const rumprun = o.str("rumprun_config");
  const rumprunConfig =
    rumprun === undefined ? undefined : absolutePath(spec, "rumprun_config", rumprun, cwd);
  if (rumprunConfig !== undefined) {
    const problem = rumprunProblem(rumprunConfig);
    if (problem !== null) missing(problem, "rumprun_config");
  }

  const lines = [
    `# Generated by jitsu for VM '${spec.label}' (libxl backend); rewritten at every start.`,
    `name = "${name}"`,
    ...(uuid === undefined ? [] : [`uuid = "${uuid.toLowerCase()}"`]),
    `type = "pv"`,
    `kernel = "${kernel}"`,
    `memory = ${memoryMiB}`,
    ...(cmdline === undefined ? [] : [`cmdline = "${checkPlain(spec, "cmdline", cmdline)}"`]),
    `vif = [ ${vifs.join(", ")} ]`,
    `disk = [ ${disks.join(", ")} ]`,
    `on_poweroff = "destroy"`,
    `on_reboot = "restart"`,
    `on_crash = "destroy"`,
    "",
  ];
  return { name, text: lines.join("\n"), rumprunConfig, memoryMiB };
}

/** What keeps the rumprun JSON from going to xenstore as it is, or null. */
function rumprunProblem(path: string): string | null {
  const problem = fileProblem(path);
  if (problem !== null) return problem;
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    return `cannot read '${path}': ${describeError(err)}`;
  }
  // One xenstore message (XENSTORE_PAYLOAD_MAX, 4096 bytes) carries the path, a nul and the value.
  if (bytes.length > RUMPRUN_MAX) {
    return `'${path}' is ${bytes.length} bytes; a xenstore value holds at most ${RUMPRUN_MAX}`;
  }
  try {
    JSON.parse(bytes.toString("utf8"));
  } catch (err) {
    return `'${path}' is not valid JSON (${describeError(err)}); rumprun reads it as JSON (rumprun -T DIR writes DIR/json.cfg)`;
  }
  return null;
}
