/**
 * The status page's files (page/: HTML, CSS and JavaScript, no build step),
 * read once and served from memory with an ETag. They ship in the npm
 * package beside dist/ (package.json `files`), and nothing on the page comes
 * from outside the host (the Content-Security-Policy says so to the browser).
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** src/http/page/ from dist/src/http/ (the compiled module) or src/http/ (the source). */
function pageDir(): string {
  const here = fileURLToPath(new URL(".", import.meta.url));
  return /[/\\]dist[/\\]src[/\\]http[/\\]$/.test(here)
    ? fileURLToPath(new URL("../../../src/http/page/", import.meta.url))
    : fileURLToPath(new URL("./page/", import.meta.url));
}

export interface PageFile {
  readonly body: Buffer;
  readonly contentType: string;
  readonly etag: string;
}

/** URL path → file under page/. */
const FILES: Readonly<Record<string, [string, string]>> = {
  "/": ["index.html", "text/html; charset=utf-8"],
  "/page/status.css": ["status.css", "text/css; charset=utf-8"],
  "/page/status.js": ["status.js", "text/javascript; charset=utf-8"],
};

/** Nothing from elsewhere: scripts, styles, fetches and the event stream all from this server. */
export const PAGE_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; " +
  "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** Reads every page file now (a missing one is an error at start-up, not a 404 later). */
export function loadPageFiles(dir = pageDir()): Map<string, PageFile> {
  const out = new Map<string, PageFile>();
  for (const [path, [file, contentType]] of Object.entries(FILES)) {
    const body = readFileSync(`${dir}${file}`);
    const etag = `"${createHash("sha256").update(body).digest("base64url").slice(0, 22)}"`;
    out.set(path, { body, contentType, etag });
  }
  return out;
}
