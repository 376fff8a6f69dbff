/**
 * The docker backend's CONFIG keys (dns and ip are common keys; ip may be
 * omitted: the container's address is read from the engine once it runs).
 */
import type { KeySpec } from "../../config/index.js";

/** The label jitsu puts on the containers it creates (value: the VM's label). */
export const CREATED_LABEL = "org.jitsu.created-for";

export const DOCKER_KEYS: readonly KeySpec[] = [
  {
    key: "name",
    type: "string",
    required: true,
    doc: "Name (or id) of the container (required). Without 'image' it must exist: jitsu starts and stops it, and never removes it.",
  },
  {
    key: "image",
    type: "string",
    doc: `Image to create the container 'name' from on the first summon if no container of that name exists (labelled ${CREATED_LABEL}); reused afterwards. The image must be on the engine already: jitsu does not pull.`,
  },
  {
    key: "cmd",
    type: "string",
    doc: "Command of a created container (default: the image's), split on spaces; '...' and \"...\" quote, \\ escapes. Only with 'image'.",
  },
  {
    key: "env",
    type: "string",
    repeatable: true,
    doc: "Environment variable of a created container, as env=NAME=VALUE. Can be set more than once. Only with 'image'.",
  },
  {
    key: "publish",
    type: "string",
    repeatable: true,
    doc: "Port of a created container published on the host, as publish=[HOSTADDR:]HOSTPORT:PORT[/tcp|/udp] (e.g. publish=127.0.0.1:8080:80). Can be set more than once. Only with 'image'.",
  },
  {
    key: "network",
    type: "string",
    doc: "Network of a created container (bridge, host, none or a network's name; default: the engine's). With 'host' the answer is the host's address. Only with 'image'.",
  },
  {
    key: "memory",
    type: "size-bytes",
    doc: "Memory limit of a created container, in bytes or with a unit (512m, 1g). Only with 'image'.",
  },
  {
    key: "stop_timeout",
    type: "seconds",
    doc: "Seconds between SIGTERM and SIGKILL when the container is shut down (-m shutdown; default: the container's own StopTimeout, else the engine's 10 s).",
  },
];
