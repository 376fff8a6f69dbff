/**
 * What the libxl tests share: a temp dir with the xenstored double, the xl
 * double (made executable, also linked as `xl` in a bin dir for PATH use), and
 * small ELF-looking kernel files.
 */
import { chmod, mkdir, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { TestContext } from "node:test";
import { libxlBackend } from "../../src/backends/libxl/index.js";
import { buildVmSpec, parseConfigString, type VmSpec } from "../../src/config/index.js";
import { XenstoredDouble } from "./xenstored.js";
import { tempDir } from "../support/index.js";

/** dist/test/doubles/xl.js */
export const XL_DOUBLE = fileURLToPath(new URL("./xl.js", import.meta.url));

export interface XenFixture {
  readonly dir: string;
  readonly xsd: XenstoredDouble;
  readonly xsSocket: string;
  /** The xl double's state dir (XL_DOUBLE_STATE). */
  readonly xlState: string;
  /** A dir holding `xl` -> the double, to put first on PATH. */
  readonly bin: string;
  /** Env for child processes that run xl / reach xenstored. */
  readonly env: Record<string, string>;
  /** Writes a kernel file (ELF magic unless `valid` is false) and returns its path. */
  kernel(name: string, valid?: boolean): Promise<string>;
}

export async function xenFixture(t: TestContext): Promise<XenFixture> {
  const tmp = await tempDir("jitsu-xl-");
  const dir = tmp.path;
  const xsSocket = join(dir, "xenstored.sock");
  const xsd = new XenstoredDouble(xsSocket);
  await xsd.start();
  const xlState = join(dir, "xl-state");
  const bin = join(dir, "bin");
  await mkdir(bin);
  await chmod(XL_DOUBLE, 0o755);
  await symlink(XL_DOUBLE, join(bin, "xl"));
  const env = { XL_DOUBLE_STATE: xlState, XENSTORED_PATH: xsSocket };
  t.after(async () => {
    await xsd.stop();
    await tmp.remove();
  });
  return {
    dir,
    xsd,
    xsSocket,
    xlState,
    bin,
    env,
    async kernel(name, valid = true) {
      const path = join(dir, name);
      await writeFile(
        path,
        valid
          ? Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46]), Buffer.alloc(60)])
          : Buffer.from("not a kernel\n"),
      );
      return path;
    },
  };
}

export function libxlSpec(config: string): VmSpec {
  return buildVmSpec(parseConfigString(config, "CONFIG #1"), "CONFIG #1", {
    backendKeys: libxlBackend.keys,
    backendName: "libxl",
  });
}
