/** VmSpecs from CONFIG strings, through the real config parser. */
import { buildVmSpec, parseConfigString, type VmSpec } from "../../../src/config/index.js";

export function specFrom(config: string, source = "CONFIG #1"): VmSpec {
  return buildVmSpec(parseConfigString(config, source), source, {
    backendKeys: [{ key: "name", type: "string", doc: "VM name" }],
    backendName: "test",
  });
}
