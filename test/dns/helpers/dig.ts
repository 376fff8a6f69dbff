/** Runs the real `dig` / `kdig` against a test server on loopback. */
import { execFile } from "node:child_process";

export interface DigResult {
  status: string;
  flags: string[];
  answers: string[];
  authority: string[];
  /** The question line as dig printed it (";www.example.org. IN A"). */
  question: string;
  edns: string | undefined;
  raw: string;
}

function run(tool: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(tool, args, { timeout: 20_000 }, (err, stdout, stderr) => {
      // dig exits 9 on "no servers could be reached"; keep the output for asserts.
      if (err && stdout === "")
        reject(new Error(`${tool} ${args.join(" ")} failed: ${err.message} ${stderr}`));
      else resolve(stdout);
    });
  });
}

function section(raw: string, title: RegExp): string[] {
  const lines = raw.split("\n");
  const start = lines.findIndex((l) => title.test(l));
  if (start < 0) return [];
  const out: string[] = [];
  for (const l of lines.slice(start + 1)) {
    if (l.trim() === "") break;
    out.push(l.replace(/^;; /, ";").replace(/\s+/g, " ").trim());
  }
  return out;
}

export function parseDig(raw: string): DigResult {
  const status = /status: (\w+)/.exec(raw)?.[1] ?? "";
  const flags = (/;; flags: ([^;]*);/.exec(raw)?.[1] ?? "")
    .trim()
    .split(/\s+/)
    .filter((f) => f !== "");
  const question = section(raw, /QUESTION SECTION/)[0] ?? "";
  return {
    status,
    flags,
    answers: section(raw, /ANSWER SECTION/),
    authority: section(raw, /AUTHORITY SECTION/),
    question,
    edns: /EDNS: ([^\n]*)/.exec(raw)?.[1],
    raw,
  };
}

export async function dig(port: number, ...args: string[]): Promise<DigResult> {
  return digAt("127.0.0.1", port, ...args);
}

/** dig against another loopback address (::1). */
export async function digAt(host: string, port: number, ...args: string[]): Promise<DigResult> {
  return parseDig(await run("dig", [`@${host}`, "-p", String(port), "+time=5", "+tries=1", ...args]));
}

export async function kdig(port: number, ...args: string[]): Promise<DigResult> {
  const raw = await run("kdig", ["@127.0.0.1", "-p", String(port), "+time=5", "+retry=0", ...args]);
  // kdig prints ";; ->>HEADER<<- opcode: QUERY; status: NOERROR; id: 1" and ";; Flags: qr aa rd; ..."
  const status = /status: (\w+)/.exec(raw)?.[1] ?? "";
  const flags = (/;; Flags: ([^;]*);/.exec(raw)?.[1] ?? "")
    .trim()
    .split(/\s+/)
    .filter((f) => f !== "");
  return {
    status,
    flags,
    answers: section(raw, /ANSWER SECTION/),
    authority: section(raw, /AUTHORITY SECTION/),
    question: section(raw, /QUESTION SECTION/)[0] ?? "",
    edns: /Version: ([^\n]*)/.exec(raw)?.[1],
    raw,
  };
}
