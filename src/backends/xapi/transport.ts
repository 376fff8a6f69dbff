/**
 * XML-RPC over HTTP(S) ("Wire Protocol for Remote API Calls", Transport Layer:
 * HTTP/HTTPS for remote administration). One POST per call on a keep-alive
 * agent; the reply must be 200 with a methodResponse body.
 */
import http from "node:http";
import https from "node:https";
import { decodeMethodResponse, encodeMethodCall, type XmlRpcValue } from "./xmlrpc.js";

export interface TransportOptions {
  /** http: or https: URL of the endpoint, without user info. */
  readonly url: URL;
  /** Accept a certificate that does not verify (self-signed). */
  readonly insecure: boolean;
  /** Per-call limit; XenAPI calls such as VM.clean_shutdown are synchronous and may take minutes. */
  readonly timeoutMs: number;
  /** How many calls may wait for an answer at once; more fail at once (a hung XAPI builds no queue). Default 256. */
  readonly maxCalls?: number;
}

/** The endpoint could not be reached or answered something that is not XML-RPC. */
export class TransportError extends Error {
  constructor(
    message: string,
    readonly code: string | undefined,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "TransportError";
  }
}

const MAX_BODY = 64 * 1024 * 1024;

const TLS_TRUST_CODES = new Set([
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "UNABLE_TO_GET_ISSUER_CERT",
  "CERT_UNTRUSTED",
  "ERR_TLS_CERT_ALTNAME_INVALID",
  "CERT_HAS_EXPIRED",
]);

export class XmlRpcTransport {
  private readonly agent: http.Agent;
  private readonly origin: string;
  private closed = false;
  /** Calls waiting for an answer. */
  waiting = 0;

  constructor(private readonly options: TransportOptions) {
    const secure = options.url.protocol === "https:";
    this.agent = secure
      ? new https.Agent({ keepAlive: true, maxSockets: 8, rejectUnauthorized: !options.insecure })
      : new http.Agent({ keepAlive: true, maxSockets: 8 });
    this.origin = options.url.origin;
  }

  /** Sends one call; resolves with the decoded value, rejects with XmlRpcFault, XmlRpcFormatError or TransportError. */
  async call(method: string, params: readonly XmlRpcValue[]): Promise<XmlRpcValue> {
    if (this.closed) throw new TransportError(`the connection to ${this.origin} is closed`, "ERR_CLOSED");
    const max = this.options.maxCalls ?? 256;
    if (this.waiting >= max) {
      throw new TransportError(
        `${this.waiting} calls to ${this.origin} are already waiting for an answer (is XAPI hung?); ${method} not sent`,
        "ERR_BUSY",
      );
    }
    const body = Buffer.from(encodeMethodCall(method, params), "utf8");
    this.waiting++;
    let text: string;
    try {
      text = await this.post(body, method, true);
    } finally {
      this.waiting--;
    }
    const response = decodeMethodResponse(text);
    if (response.kind === "fault") throw response.fault;
    return response.value;
  }

  /** Ends every connection, including calls in flight (they reject); later calls reject at once. */
  close(): void {
    this.closed = true;
    this.agent.destroy();
  }

  /**
   * One POST. A keep-alive socket the server closed just as we reused it fails
   * with ECONNRESET before any reply: the server never saw the request, so it is
   * sent once more on a fresh socket (Node's documented `reusedSocket` pattern).
   */
  private post(body: Buffer, method: string, mayRetry: boolean): Promise<string> {
    const url = this.options.url;
    const lib = url.protocol === "https:" ? https : http;
    return new Promise((resolve, reject) => {
      const req = lib.request(
        {
          protocol: url.protocol,
          hostname: url.hostname.replace(/^\[|\]$/g, ""),
          port: url.port === "" ? undefined : Number(url.port),
          path: `${url.pathname}`,
          method: "POST",
          // The retry goes on a connection of its own, never on another idle one.
          agent: mayRetry ? this.agent : false,
          rejectUnauthorized: !this.options.insecure,
          headers: {
            "content-type": "text/xml",
            "content-length": body.length,
            "user-agent": "jitsu",
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on("data", (chunk: Buffer) => {
            size += chunk.length;
            if (size > MAX_BODY) {
              req.destroy(
                new TransportError(`${this.origin} sent a reply larger than ${MAX_BODY} bytes`, "EMSGSIZE"),
              );
              return;
            }
            chunks.push(chunk);
          });
          res.on("error", (err) => reject(this.wrap(err, method)));
          res.on("end", () => {
            const status = res.statusCode ?? 0;
            const text = Buffer.concat(chunks).toString("utf8");
            if (status !== 200) {
              const firstLine = text.split("\n", 1)[0]?.slice(0, 120) ?? "";
              reject(
                new TransportError(
                  `${this.origin} answered ${method} with HTTP ${status}${firstLine === "" ? "" : `: ${firstLine}`}`,
                  `HTTP_${status}`,
                ),
              );
              return;
            }
            resolve(text);
          });
        },
      );
      req.setTimeout(this.options.timeoutMs, () => {
        req.destroy(
          new TransportError(
            `${this.origin} did not answer ${method} within ${this.options.timeoutMs / 1000} s`,
            "ETIMEDOUT",
          ),
        );
      });
      req.on("error", (err) => {
        if (
          mayRetry &&
          !this.closed &&
          req.reusedSocket &&
          (err as NodeJS.ErrnoException).code === "ECONNRESET"
        ) {
          this.post(body, method, false).then(resolve, reject);
          return;
        }
        reject(this.wrap(err, method));
      });
      req.end(body);
    });
  }

  private wrap(err: Error, method: string): TransportError {
    if (err instanceof TransportError) return err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== undefined && TLS_TRUST_CODES.has(code)) {
      return new TransportError(
        `TLS certificate of ${this.origin} is not trusted (${code}: ${err.message}); trust its CA with ` +
          `NODE_EXTRA_CA_CERTS=ca.pem, or accept it unverified with ?insecure=1 in the -c URI or JITSU_XAPI_INSECURE=1`,
        code,
        { cause: err },
      );
    }
    return new TransportError(
      `cannot reach ${this.origin} for ${method} (${code === undefined ? err.message : `${code}: ${err.message}`})`,
      code,
      { cause: err },
    );
  }
}
