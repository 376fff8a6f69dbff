/**
 * Containers through the Docker Engine API (Docker, or Podman's compatible
 * service), with dockerode. See README.md in this folder.
 */
import type { BackendFactory } from "../contract.js";
import { BACKEND_NAME, DOCKER_STOP_MODES, DockerBackend } from "./backend.js";
import { DOCKER_KEYS } from "./keys.js";
import { DEFAULT_DOCKER_HOST, parseDockerTarget } from "./target.js";

export { DockerBackend, mapContainerState, type EngineInfo } from "./backend.js";
export { CREATED_LABEL, DOCKER_KEYS } from "./keys.js";
export { parseDockerTarget, DEFAULT_DOCKER_HOST, type DockerTarget } from "./target.js";
export { parsePublish, planContainer } from "./container-plan.js";
export { eventState, parseEvent } from "./events.js";

export const dockerBackend: BackendFactory = {
  name: BACKEND_NAME,
  summary:
    "Containers through the Docker Engine API, Docker or Podman: -c unix:///var/run/docker.sock (the default, else DOCKER_HOST), unix:///run/podman/podman.sock, tcp://HOST:2376, https://HOST:2376 (TLS files from DOCKER_CERT_PATH)",
  keys: DOCKER_KEYS,
  connects: true,
  hosts: {
    check: (uri) => void parseDockerTarget(uri),
    // -c when it was given, else DOCKER_HOST, else the default socket (as create reads them).
    defaultUri: (options) => {
      const given = options.settings["connect"];
      if (given !== undefined) return given;
      const env = process.env["DOCKER_HOST"];
      return env !== undefined && env !== "" ? env : DEFAULT_DOCKER_HOST;
    },
  },
  capabilities: {
    stopModes: DOCKER_STOP_MODES,
    optional: new Set(["addresses", "onEvent", "preflight"]),
  },
  // -c only when it was given (settings.connect); the CLI's own default (xen:///) is libvirt's.
  create: (options) => new DockerBackend(parseDockerTarget(options.settings["connect"]), options),
};
