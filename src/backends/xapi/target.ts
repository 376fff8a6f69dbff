/**
 * The -c value for the XAPI backend: `https://[USER[:PASSWORD]@]HOST[:PORT][/PATH][?insecure=1&timeout=SECONDS]`
 * (or http://). Credentials missing from the URI come from JITSU_XAPI_USER and
 * JITSU_XAPI_PASSWORD. `display` is what messages show: never the password.
 */
import { UsageError } from "../../errors/index.js";
import { redactUri } from "../../log/index.js";

export interface XapiTarget {
  /** The endpoint, without user info or jitsu's own query parameters. */
  readonly url: URL;
  /** scheme://host:port, for messages. */
  readonly display: string;
  readonly user: string;
  readonly password: string;
  readonly insecure: boolean;
  readonly timeoutMs: number;
}

const DEFAULT_TIMEOUT_S = 300;

function truthy(v: string | undefined): boolean {
  return v !== undefined && /^(1|true|yes|on)$/i.test(v.trim());
}

export function parseXapiTarget(connect: string, env: NodeJS.ProcessEnv = process.env): XapiTarget {
  const shown = redactUri(connect);
  let url: URL;
  try {
    url = new URL(connect);
  } catch {
    throw new UsageError(
      `'${shown}' is not a URL; the xapi backend needs https://HOST or http://HOST[:PORT]`,
      "--connect",
    );
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new UsageError(
      `'${shown}' is not an XAPI address; the xapi backend needs -c https://HOST or http://HOST[:PORT]`,
      "--connect",
    );
  }
  if (url.hostname === "") throw new UsageError(`'${shown}' names no host`, "--connect");

  let insecure = truthy(env["JITSU_XAPI_INSECURE"]);
  let timeoutMs = DEFAULT_TIMEOUT_S * 1000;
  for (const [key, value] of url.searchParams) {
    if (key === "insecure") {
      if (!/^(0|1|true|false)$/i.test(value)) {
        throw new UsageError(`'${shown}': insecure must be 1 or 0, got '${value}'`, "--connect");
      }
      insecure = truthy(value);
    } else if (key === "timeout") {
      const s = Number(value);
      if (!/^\d+(\.\d+)?$/.test(value) || s <= 0) {
        throw new UsageError(
          `'${shown}': timeout must be a number of seconds above 0, got '${value}'`,
          "--connect",
        );
      }
      timeoutMs = s * 1000;
    } else {
      throw new UsageError(`'${shown}': unknown parameter '${key}' (known: insecure, timeout)`, "--connect");
    }
  }

  const user = url.username !== "" ? decodeURIComponent(url.username) : (env["JITSU_XAPI_USER"] ?? "");
  const password =
    url.password !== "" ? decodeURIComponent(url.password) : (env["JITSU_XAPI_PASSWORD"] ?? "");
  if (user === "") {
    throw new UsageError(
      `no XAPI user for ${url.protocol}//${url.host}: give it as ${url.protocol}//USER:PASSWORD@${url.host} or in JITSU_XAPI_USER / JITSU_XAPI_PASSWORD`,
      "--connect",
    );
  }

  const endpoint = new URL(`${url.protocol}//${url.host}${url.pathname === "" ? "/" : url.pathname}`);
  return {
    url: endpoint,
    display: `${url.protocol}//${url.host}`,
    user,
    password,
    insecure: insecure && url.protocol === "https:",
    timeoutMs,
  };
}
