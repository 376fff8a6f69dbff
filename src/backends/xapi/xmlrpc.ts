/**
 * XML-RPC codec (http://xmlrpc.com/spec.md): encodes a <methodCall> and decodes
 * a <methodResponse>, as the XenAPI speaks it ("Wire Protocol for Remote API
 * Calls", XML-RPC Protocol). Parsing is done by fast-xml-parser; this file only
 * maps its tree onto XML-RPC values and says clearly what is wrong with a reply
 * that does not fit the spec.
 *
 * Value mapping (both ways):
 *   <string> (or an untyped <value>) <-> string
 *   <int>/<i4> (and <i8> when decoding) <-> integer number (32-bit when encoding)
 *   <double> <-> non-integer number, or XmlRpcDouble (when encoding)
 *   <boolean> 0/1 <-> boolean
 *   <nil/> <-> null
 *   <array> <-> XmlRpcValue[]
 *   <struct> <-> XmlRpcStruct (a null-prototype object)
 *   <base64> <-> Uint8Array
 *   <dateTime.iso8601> -> XmlRpcDateTime (its text, unparsed: XenAPI sends "20260101T10:00:00Z")
 * The XenAPI sends 64-bit `int`s as strings of digits; callers convert them.
 */
import { createRequire } from "node:module";
import type { XMLParser } from "fast-xml-parser";

/** fast-xml-parser, loaded on first use: only the xapi backend needs it (~10 MB of RSS otherwise). */
const fxp = (): typeof import("fast-xml-parser") =>
  createRequire(import.meta.url)("fast-xml-parser") as typeof import("fast-xml-parser");

export interface XmlRpcStruct {
  [name: string]: XmlRpcValue;
}
export class XmlRpcDateTime {
  constructor(readonly text: string) {}
}
/** A number sent as <double> even when it is integral (XenAPI `float` parameters). */
export class XmlRpcDouble {
  constructor(readonly value: number) {}
}
export type XmlRpcValue =
  | string
  | number
  | boolean
  | null
  | Uint8Array
  | XmlRpcDateTime
  | XmlRpcDouble
  | XmlRpcValue[]
  | XmlRpcStruct;

/** A reply that is not a well-formed XML-RPC methodResponse. */
export class XmlRpcFormatError extends Error {
  constructor(message: string) {
    super(`malformed XML-RPC response: ${message}`);
    this.name = "XmlRpcFormatError";
  }
}

/** An XML-RPC <fault> (spec "Fault example"): the server could not run the call at all. */
export class XmlRpcFault extends Error {
  constructor(
    readonly faultCode: number,
    readonly faultString: string,
  ) {
    super(`XML-RPC fault ${faultCode}: ${faultString}`);
    this.name = "XmlRpcFault";
  }
}

export type MethodResponse =
  | { readonly kind: "value"; readonly value: XmlRpcValue }
  | { readonly kind: "fault"; readonly fault: XmlRpcFault };

// ---------------------------------------------------------------- encoding

const INVALID_XML_CHAR = /[^\t\n\r\u0020-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/u;

function escapeText(text: string): string {
  if (INVALID_XML_CHAR.test(text)) {
    throw new TypeError("XML-RPC string contains a control character that XML 1.0 cannot carry");
  }
  // \r is escaped so that XML end-of-line normalisation does not turn it into \n.
  return text.replace(/[&<>\r]/g, (c) =>
    c === "&" ? "&amp;" : c === "<" ? "&lt;" : c === ">" ? "&gt;" : "&#13;",
  );
}

function encodeValue(value: XmlRpcValue, out: string[], depth: number): void {
  if (depth > 64) throw new TypeError("XML-RPC value is nested too deeply (or is circular)");
  out.push("<value>");
  if (value === null) {
    out.push("<nil/>");
  } else if (typeof value === "string") {
    out.push("<string>", escapeText(value), "</string>");
  } else if (typeof value === "boolean") {
    out.push("<boolean>", value ? "1" : "0", "</boolean>");
  } else if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new TypeError(`XML-RPC cannot carry the number ${value}`);
    if (Number.isInteger(value)) {
      if (value < -2147483648 || value > 2147483647) {
        throw new TypeError(`XML-RPC <int> is 32-bit; ${value} is out of range (XenAPI ints go as strings)`);
      }
      out.push("<int>", String(value), "</int>");
    } else {
      out.push("<double>", String(value), "</double>");
    }
  } else if (value instanceof Uint8Array) {
    out.push("<base64>", Buffer.from(value).toString("base64"), "</base64>");
  } else if (value instanceof XmlRpcDouble) {
    if (!Number.isFinite(value.value)) throw new TypeError(`XML-RPC cannot carry the number ${value.value}`);
    out.push("<double>", String(value.value), "</double>");
  } else if (value instanceof XmlRpcDateTime) {
    out.push("<dateTime.iso8601>", escapeText(value.text), "</dateTime.iso8601>");
  } else if (Array.isArray(value)) {
    out.push("<array><data>");
    for (const item of value) encodeValue(item, out, depth + 1);
    out.push("</data></array>");
  } else {
    out.push("<struct>");
    for (const [name, member] of Object.entries(value)) {
      out.push("<member><name>", escapeText(name), "</name>");
      encodeValue(member, out, depth + 1);
      out.push("</member>");
    }
    out.push("</struct>");
  }
  out.push("</value>");
}

/** The body of an XML-RPC request (spec "Request example"). */
export function encodeMethodCall(method: string, params: readonly XmlRpcValue[]): string {
  if (!/^[A-Za-z0-9_.:/]+$/.test(method)) throw new TypeError(`invalid XML-RPC method name '${method}'`);
  const out = ['<?xml version="1.0"?>\n<methodCall><methodName>', method, "</methodName><params>"];
  for (const p of params) {
    out.push("<param>");
    encodeValue(p, out, 0);
    out.push("</param>");
  }
  out.push("</params></methodCall>\n");
  return out.join("");
}

// ---------------------------------------------------------------- decoding

/** fast-xml-parser's preserveOrder tree: each node is `{ tag: children }` or `{ "#text": text }`. */
type XmlNode = Record<string, unknown>;
interface Element {
  readonly tag: string;
  readonly children: XmlNode[];
}

let parserInstance: XMLParser | undefined;
const parser = (): XMLParser =>
  (parserInstance ??= new (fxp().XMLParser)({
    preserveOrder: true,
    trimValues: false,
    parseTagValue: false,
    ignoreAttributes: true,
    ignoreDeclaration: true,
    ignorePiTags: true,
    htmlEntities: true,
    commentPropName: false,
    cdataPropName: false,
  }));

/** The element children of a node list; non-blank text between them is an error. */
function elements(nodes: XmlNode[], where: string): Element[] {
  const out: Element[] = [];
  for (const node of nodes) {
    const [tag, children] = Object.entries(node)[0] ?? [];
    if (tag === undefined) continue;
    if (tag === "#text") {
      if (String(children).trim() !== "") {
        throw new XmlRpcFormatError(`unexpected text '${clip(String(children))}' inside <${where}>`);
      }
      continue;
    }
    out.push({ tag, children: Array.isArray(children) ? (children as XmlNode[]) : [] });
  }
  return out;
}

/** The text content of an element that must hold only text. */
function text(el: Element): string {
  let s = "";
  for (const node of el.children) {
    const [tag, value] = Object.entries(node)[0] ?? [];
    if (tag === "#text") s += String(value);
    else if (tag !== undefined) throw new XmlRpcFormatError(`<${el.tag}> must hold text, not <${tag}>`);
  }
  return s;
}

function only(el: Element, tag: string): Element {
  const kids = elements(el.children, el.tag);
  if (kids.length !== 1 || kids[0]!.tag !== tag) {
    const got = kids.length === 0 ? "nothing" : kids.map((k) => `<${k.tag}>`).join(", ");
    throw new XmlRpcFormatError(`<${el.tag}> must hold one <${tag}>, got ${got}`);
  }
  return kids[0]!;
}

function clip(s: string): string {
  return s.length > 40 ? `${s.slice(0, 40)}...` : s;
}

function decodeInt(s: string, tag: string): number {
  const t = s.trim();
  if (!/^[+-]?\d+$/.test(t)) throw new XmlRpcFormatError(`<${tag}> holds '${clip(s)}', not an integer`);
  const n = Number(t);
  if (!Number.isSafeInteger(n)) throw new XmlRpcFormatError(`<${tag}> ${clip(t)} is out of range`);
  return n;
}

function decodeValue(valueEl: Element, depth: number): XmlRpcValue {
  if (depth > 64) throw new XmlRpcFormatError("values nested too deeply");
  // An untyped <value>text</value> is a string (spec: "If no type is indicated, the type is string").
  if (valueEl.children.every((node) => "#text" in node)) return text(valueEl);
  const typed = elements(valueEl.children, "value");
  if (typed.length !== 1)
    throw new XmlRpcFormatError(`<value> must hold one typed element, got ${typed.length}`);
  const el = typed[0]!;
  switch (el.tag) {
    case "string":
      return text(el);
    case "int":
    case "i4":
    case "i8":
      return decodeInt(text(el), el.tag);
    case "boolean": {
      const t = text(el).trim();
      if (t === "1") return true;
      if (t === "0") return false;
      throw new XmlRpcFormatError(`<boolean> holds '${clip(t)}', not 0 or 1`);
    }
    case "double": {
      const t = text(el).trim();
      if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(t)) {
        throw new XmlRpcFormatError(`<double> holds '${clip(t)}', not a number`);
      }
      return Number(t);
    }
    case "nil":
    case "ex:nil":
      return null;
    case "base64": {
      const t = text(el).replace(/\s+/g, "");
      if (!/^[A-Za-z0-9+/]*={0,2}$/.test(t)) throw new XmlRpcFormatError("<base64> holds invalid base64");
      return new Uint8Array(Buffer.from(t, "base64"));
    }
    case "dateTime.iso8601":
      return new XmlRpcDateTime(text(el).trim());
    case "array": {
      const data = only(el, "data");
      return elements(data.children, "data").map((v) => {
        if (v.tag !== "value") throw new XmlRpcFormatError(`<data> must hold <value>s, got <${v.tag}>`);
        return decodeValue(v, depth + 1);
      });
    }
    case "struct": {
      const out: XmlRpcStruct = Object.create(null) as XmlRpcStruct;
      for (const member of elements(el.children, "struct")) {
        if (member.tag !== "member")
          throw new XmlRpcFormatError(`<struct> must hold <member>s, got <${member.tag}>`);
        const parts = elements(member.children, "member");
        const name = parts.find((p) => p.tag === "name");
        const value = parts.find((p) => p.tag === "value");
        if (parts.length !== 2 || name === undefined || value === undefined) {
          throw new XmlRpcFormatError("<member> must hold one <name> and one <value>");
        }
        out[text(name)] = decodeValue(value, depth + 1);
      }
      return out;
    }
    default:
      throw new XmlRpcFormatError(`unknown value type <${el.tag}>`);
  }
}

/** Decodes the body of an XML-RPC response (spec "Response example" and "Fault example"). */
export function decodeMethodResponse(xml: string): MethodResponse {
  if (xml.trim() === "") throw new XmlRpcFormatError("empty body");
  const valid = fxp().XMLValidator.validate(xml);
  if (valid !== true) {
    throw new XmlRpcFormatError(
      `not well-formed XML (line ${valid.err.line}, column ${valid.err.col}: ${valid.err.msg})`,
    );
  }
  let tree: XmlNode[];
  try {
    tree = parser().parse(xml) as XmlNode[];
  } catch (err) {
    throw new XmlRpcFormatError(`not well-formed XML (${(err as Error).message})`);
  }
  const roots = elements(tree, "document");
  if (roots.length !== 1 || roots[0]!.tag !== "methodResponse") {
    throw new XmlRpcFormatError(
      `the document must be one <methodResponse>, got ${roots.map((r) => `<${r.tag}>`).join(", ") || "nothing"}`,
    );
  }
  const body = elements(roots[0]!.children, "methodResponse");
  if (body.length !== 1) throw new XmlRpcFormatError("<methodResponse> must hold <params> or <fault>");
  const first = body[0]!;
  if (first.tag === "params") {
    const param = only(first, "param");
    return { kind: "value", value: decodeValue(only(param, "value"), 0) };
  }
  if (first.tag === "fault") {
    const fault = decodeValue(only(first, "value"), 0);
    if (fault === null || typeof fault !== "object" || Array.isArray(fault) || fault instanceof Uint8Array) {
      throw new XmlRpcFormatError("<fault> must hold a struct");
    }
    const s = fault as XmlRpcStruct;
    const code = s["faultCode"];
    const str = s["faultString"];
    if (typeof code !== "number" || typeof str !== "string") {
      throw new XmlRpcFormatError("<fault> struct must have an int faultCode and a string faultString");
    }
    return { kind: "fault", fault: new XmlRpcFault(code, str) };
  }
  throw new XmlRpcFormatError(`<methodResponse> must hold <params> or <fault>, got <${first.tag}>`);
}

/** A struct (not an array, null, bytes or date) */
export function isStruct(v: XmlRpcValue | undefined): v is XmlRpcStruct {
  return (
    v !== null &&
    v !== undefined &&
    typeof v === "object" &&
    !Array.isArray(v) &&
    !(v instanceof Uint8Array) &&
    !(v instanceof XmlRpcDateTime) &&
    !(v instanceof XmlRpcDouble)
  );
}
