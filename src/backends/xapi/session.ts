/**
 * A XenAPI session ("Wire Protocol for Remote API Calls": Session Layer, and
 * "XML-RPC Return Values and Status Codes"): logs in with
 * session.login_with_password, passes the session reference as the first
 * parameter of every call, unwraps {Status, Value | ErrorDescription}, logs in
 * again once when the server says SESSION_INVALID, follows a pool member's
 * HOST_IS_SLAVE to the pool master (same scheme and port), and logs out on close.
 */
import type { Logger } from "../../log/index.js";
import { XmlRpcTransport } from "./transport.js";
import type { XapiTarget } from "./target.js";
import { isStruct, type XmlRpcValue } from "./xmlrpc.js";

/** A call the XenAPI answered with Status "Failure"; keeps the ErrorDescription as sent. */
export class XenApiFailure extends Error {
  readonly code: string;
  readonly params: readonly string[];
  constructor(
    readonly method: string,
    readonly errorDescription: readonly string[],
  ) {
    super(`${method} failed: ${errorDescription.join(" ")}`);
    this.name = "XenApiFailure";
    this.code = errorDescription[0] ?? "UNKNOWN";
    this.params = errorDescription.slice(1);
  }
  /** "CODE param param", as the xe CLI prints it. */
  get detail(): string {
    return this.errorDescription.join(" ");
  }
}

/** A reply that is XML-RPC but not the XenAPI's Status/Value shape. */
export class XenApiProtocolError extends Error {
  constructor(method: string, what: string) {
    super(`bad reply to ${method}: ${what}`);
    this.name = "XenApiProtocolError";
  }
}

/** Unwraps a XenAPI return struct. */
export function unwrapResult(method: string, reply: XmlRpcValue): XmlRpcValue {
  if (!isStruct(reply)) throw new XenApiProtocolError(method, "expected a struct with a Status member");
  const status = reply["Status"];
  if (status === "Success") {
    if (!("Value" in reply)) throw new XenApiProtocolError(method, "Status is Success but there is no Value");
    return reply["Value"]!;
  }
  if (status === "Failure") {
    const desc = reply["ErrorDescription"];
    if (!Array.isArray(desc) || desc.length === 0 || !desc.every((d) => typeof d === "string")) {
      throw new XenApiProtocolError(
        method,
        "Status is Failure but ErrorDescription is not a list of strings",
      );
    }
    throw new XenApiFailure(method, desc as string[]);
  }
  throw new XenApiProtocolError(
    method,
    `Status is ${JSON.stringify(status ?? null)}, not Success or Failure`,
  );
}

/** How many HOST_IS_SLAVE redirects one login follows before giving up (a pool mid-failover may point around). */
const MAX_MASTER_HOPS = 3;

export class XenApiSession {
  private transport: XmlRpcTransport;
  private url: URL;
  private session: string | null = null;
  /** After logout: no more logins, so a call still in flight cannot open a new session. */
  private closed = false;
  private loggingIn: Promise<string> | null = null;
  /** Bumped at each login: object references from an older session may no longer be valid. */
  generation = 0;

  constructor(
    private readonly target: XapiTarget,
    private readonly log: Logger,
  ) {
    this.url = target.url;
    this.transport = this.transportFor(target.url);
  }

  /** scheme://host:port of the host talked to now (the pool master, after a redirect). */
  get display(): string {
    return this.url.origin;
  }

  get loggedIn(): boolean {
    return this.session !== null;
  }

  /** Logs in (once, however many callers ask at the same time). */
  login(): Promise<string> {
    if (this.loggingIn === null) {
      this.loggingIn = this.doLogin().finally(() => {
        this.loggingIn = null;
      });
    }
    return this.loggingIn;
  }

  /** Calls `method` with the session reference prepended; logs in again once on SESSION_INVALID. */
  async call(method: string, ...params: XmlRpcValue[]): Promise<XmlRpcValue> {
    const session = this.session ?? (await this.login());
    try {
      return unwrapResult(method, await this.transport.call(method, [session, ...params]));
    } catch (err) {
      if (err instanceof XenApiFailure && err.code === "HOST_IS_SLAVE" && err.params[0] !== undefined) {
        // The master moved (pool failover): log in at the new master and try once more there.
        this.follow(err.params[0]);
        const fresh = await this.relogin(session);
        return unwrapResult(method, await this.transport.call(method, [fresh, ...params]));
      }
      if (!(err instanceof XenApiFailure) || err.code !== "SESSION_INVALID") throw err;
      this.log.info({ method }, `XAPI session at ${this.display} is no longer valid; logging in again`);
      // Another call may have logged in already; only the first one to notice starts a new login.
      const fresh =
        this.session !== null && this.session !== session ? this.session : await this.relogin(session);
      return unwrapResult(method, await this.transport.call(method, [fresh, ...params]));
    }
  }

  /** Calls a method that takes no session (session.login_with_password). */
  async callWithoutSession(method: string, ...params: XmlRpcValue[]): Promise<XmlRpcValue> {
    return unwrapResult(method, await this.transport.call(method, params));
  }

  async logout(): Promise<void> {
    this.closed = true;
    const session = this.session;
    this.session = null;
    try {
      if (session !== null) {
        unwrapResult("session.logout", await this.transport.call("session.logout", [session]));
      }
    } finally {
      this.transport.close();
    }
  }

  /** Talks to the pool master at `address` from now on: same scheme, port and path. */
  private follow(address: string): void {
    const next = new URL(this.url.href);
    next.hostname = address.includes(":") ? `[${address}]` : address;
    this.log.warn(`XAPI host ${this.display} is a pool member; talking to the pool master at ${next.origin}`);
    this.transport.close();
    this.url = next;
    this.transport = this.transportFor(next);
    this.session = null;
  }

  private transportFor(url: URL): XmlRpcTransport {
    return new XmlRpcTransport({ url, insecure: this.target.insecure, timeoutMs: this.target.timeoutMs });
  }

  private relogin(stale: string): Promise<string> {
    if (this.session === stale) this.session = null;
    return this.login();
  }

  private async doLogin(): Promise<string> {
    if (this.closed) throw new XenApiProtocolError("session.login_with_password", "the session was closed");
    let value: XmlRpcValue;
    for (let hops = 0; ; hops++) {
      try {
        // session.login_with_password(uname, pwd, version, originator)
        value = await this.callWithoutSession(
          "session.login_with_password",
          this.target.user,
          this.target.password,
          "1.0",
          "jitsu",
        );
        break;
      } catch (err) {
        if (
          !(err instanceof XenApiFailure) ||
          err.code !== "HOST_IS_SLAVE" ||
          err.params[0] === undefined ||
          hops >= MAX_MASTER_HOPS
        ) {
          throw err;
        }
        this.follow(err.params[0]);
      }
    }
    if (typeof value !== "string" || value === "") {
      throw new XenApiProtocolError("session.login_with_password", "expected a session reference string");
    }
    this.session = value;
    this.generation += 1;
    return value;
  }
}
