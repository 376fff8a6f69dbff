import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  XmlRpcDateTime,
  XmlRpcDouble,
  XmlRpcFault,
  XmlRpcFormatError,
  decodeMethodResponse,
  encodeMethodCall,
  type XmlRpcValue,
} from "../../../src/backends/xapi/xmlrpc.js";
import { XenApiFailure, XenApiProtocolError, unwrapResult } from "../../../src/backends/xapi/session.js";

const wrap = (value: string): string =>
  `<?xml version="1.0"?>\n<methodResponse><params><param><value>${value}</value></param></params></methodResponse>`;

function decode(value: string): XmlRpcValue {
  const r = decodeMethodResponse(wrap(value));
  assert.equal(r.kind, "value");
  return r.kind === "value" ? r.value : null;
}

describe("XML-RPC encodeMethodCall", () => {
  it("encodes the login call exactly as the XenAPI wire-protocol example shows it", () => {
    const xml = encodeMethodCall("session.login_with_password", ["user", "passwd", "version", "originator"]);
    assert.equal(
      xml,
      '<?xml version="1.0"?>\n<methodCall><methodName>session.login_with_password</methodName><params>' +
        "<param><value><string>user</string></value></param>" +
        "<param><value><string>passwd</string></value></param>" +
        "<param><value><string>version</string></value></param>" +
        "<param><value><string>originator</string></value></param>" +
        "</params></methodCall>\n",
    );
  });

  it("encodes every type: int, double, boolean, nil, array, struct, base64, dateTime", () => {
    const xml = encodeMethodCall("m", [
      42,
      -1.5,
      true,
      false,
      null,
      ["a", 1],
      { k: "v", n: [] },
      new Uint8Array([1, 2, 255]),
      new XmlRpcDateTime("20260101T10:00:00Z"),
      new XmlRpcDouble(30),
    ]);
    for (const part of [
      "<value><int>42</int></value>",
      "<value><double>-1.5</double></value>",
      "<value><boolean>1</boolean></value>",
      "<value><boolean>0</boolean></value>",
      "<value><nil/></value>",
      "<value><array><data><value><string>a</string></value><value><int>1</int></value></data></array></value>",
      "<value><struct><member><name>k</name><value><string>v</string></value></member>" +
        "<member><name>n</name><value><array><data></data></array></value></member></struct></value>",
      "<value><base64>AQL/</base64></value>",
      "<value><dateTime.iso8601>20260101T10:00:00Z</dateTime.iso8601></value>",
      "<value><double>30</double></value>",
    ]) {
      assert.ok(xml.includes(part), `missing ${part} in ${xml}`);
    }
  });

  it("escapes markup and carriage returns in strings and member names", () => {
    const xml = encodeMethodCall("m", [{ "a<b": "x & y > z\r\n" }]);
    assert.ok(xml.includes("<name>a&lt;b</name>"));
    assert.ok(xml.includes("<string>x &amp; y &gt; z&#13;\n</string>"));
  });

  it("refuses values XML-RPC cannot carry", () => {
    assert.throws(() => encodeMethodCall("m", [2 ** 31]), /32-bit/);
    assert.throws(() => encodeMethodCall("m", [Number.NaN]), /cannot carry/);
    assert.throws(() => encodeMethodCall("m", ["bell\u0007"]), /control character/);
    assert.throws(() => encodeMethodCall("bad name", []), /invalid XML-RPC method name/);
    const loop: XmlRpcValue[] = [];
    loop.push(loop);
    assert.throws(() => encodeMethodCall("m", [loop]), /nested too deeply/);
  });
});

describe("XML-RPC decodeMethodResponse", () => {
  it("decodes the XenAPI example reply (untyped values are strings)", () => {
    const v = decode(`<struct>
       <member><name>Status</name><value>Success</value></member>
       <member><name>Value</name><value><array><data>
         <value>81547a35-205c-a551-c577-00b982c5fe00</value>
         <value>61c85a22-05da-b8a2-2e55-06b0847da503</value>
       </data></array></value></member>
     </struct>`);
    assert.deepEqual(unwrapResult("host.get_resident_VMs", v), [
      "81547a35-205c-a551-c577-00b982c5fe00",
      "61c85a22-05da-b8a2-2e55-06b0847da503",
    ]);
  });

  it("decodes scalars, keeps string whitespace and decodes entities", () => {
    assert.equal(decode("<string>  two  spaces </string>"), "  two  spaces ");
    assert.equal(decode("<string/>"), "");
    assert.equal(decode(""), "");
    assert.equal(decode("a &amp; b &lt;c&gt; &#65;&#x42;&#13;"), "a & b <c> AB\r");
    assert.equal(decode("<i4>-7</i4>"), -7);
    assert.equal(decode("<int> 12 </int>"), 12);
    assert.equal(decode("<i8>9007199254740991</i8>"), 9007199254740991);
    assert.equal(decode("<double>2.5e3</double>"), 2500);
    assert.equal(decode("<boolean>1</boolean>"), true);
    assert.equal(decode("<boolean>0</boolean>"), false);
    assert.equal(decode("<nil/>"), null);
    assert.deepEqual(decode("<base64>AQL/</base64>"), new Uint8Array([1, 2, 255]));
    assert.deepEqual(
      decode("<dateTime.iso8601>20260101T10:00:00Z</dateTime.iso8601>"),
      new XmlRpcDateTime("20260101T10:00:00Z"),
    );
    assert.deepEqual(decode("<array><data></data></array>"), []);
  });

  it("decodes structs into null-prototype objects (no prototype pollution)", () => {
    const v = decode(
      "<struct><member><name>__proto__</name><value><string>x</string></value></member>" +
        "<member><name>n</name><value><struct></struct></value></member></struct>",
    ) as Record<string, XmlRpcValue>;
    assert.equal(Object.getPrototypeOf(v), null);
    assert.equal(v["__proto__"], "x");
    assert.deepEqual({ ...(v["n"] as object) }, {});
  });

  it("decodes a fault", () => {
    const r = decodeMethodResponse(
      "<methodResponse><fault><value><struct>" +
        "<member><name>faultCode</name><value><int>4</int></value></member>" +
        "<member><name>faultString</name><value><string>Too many parameters.</string></value></member>" +
        "</struct></value></fault></methodResponse>",
    );
    assert.equal(r.kind, "fault");
    assert.ok(r.kind === "fault" && r.fault instanceof XmlRpcFault);
    assert.equal(r.kind === "fault" ? r.fault.message : "", "XML-RPC fault 4: Too many parameters.");
  });

  const malformed: [string, string, RegExp][] = [
    ["empty body", "", /empty body/],
    ["HTML error page", "<html><body>502 Bad Gateway</body></html>", /one <methodResponse>, got <html>/],
    ["unclosed tag", "<methodResponse><params>", /not well-formed XML \(line 1/],
    ["mismatched tags", "<methodResponse><params></param></methodResponse>", /not well-formed XML/],
    ["plain text", "Internal error", /not well-formed XML|one <methodResponse>/],
    ["no params or fault", "<methodResponse></methodResponse>", /must hold <params> or <fault>/],
    [
      "two params",
      wrap("<int>1</int>").replace("</params>", "<param><value>x</value></param></params>"),
      /one <param>/,
    ],
    ["unknown type", wrap("<float>1</float>"), /unknown value type <float>/],
    ["bad int", wrap("<int>12a</int>"), /<int> holds '12a', not an integer/],
    ["huge int", wrap("<i8>99999999999999999999</i8>"), /out of range/],
    ["bad boolean", wrap("<boolean>true</boolean>"), /<boolean> holds 'true', not 0 or 1/],
    ["bad double", wrap("<double>one</double>"), /<double> holds 'one'/],
    ["two typed values", wrap("<int>1</int><int>2</int>"), /one typed element, got 2/],
    [
      "member without value",
      wrap("<struct><member><name>a</name></member></struct>"),
      /one <name> and one <value>/,
    ],
    ["array without data", wrap("<array><value>1</value></array>"), /<array> must hold one <data>/],
    [
      "stray text in struct",
      wrap("<struct>oops<member><name>a</name><value>1</value></member></struct>"),
      /unexpected text 'oops'/,
    ],
    [
      "fault without code",
      "<methodResponse><fault><value><struct><member><name>faultString</name><value>x</value></member></struct></value></fault></methodResponse>",
      /int faultCode and a string faultString/,
    ],
  ];
  for (const [what, xml, re] of malformed) {
    it(`rejects a malformed response clearly: ${what}`, () => {
      assert.throws(
        () => decodeMethodResponse(xml),
        (err: unknown) =>
          err instanceof XmlRpcFormatError && re.test(err.message) && !err.message.includes("\n"),
      );
    });
  }
});

describe("XenAPI result unwrapping", () => {
  it("returns Value on Success (void is an empty string)", () => {
    assert.equal(unwrapResult("VM.start", { Status: "Success", Value: "" }), "");
  });

  it("raises Failure with the ErrorDescription kept as sent", () => {
    const desc = ["VM_BAD_POWER_STATE", "OpaqueRef:1", "halted", "running"];
    assert.throws(
      () => unwrapResult("VM.start", { Status: "Failure", ErrorDescription: desc }),
      (err: unknown) =>
        err instanceof XenApiFailure &&
        err.code === "VM_BAD_POWER_STATE" &&
        assert.deepEqual(err.errorDescription, desc) === undefined &&
        err.detail === "VM_BAD_POWER_STATE OpaqueRef:1 halted running",
    );
  });

  it("rejects replies that are not the Status/Value shape", () => {
    assert.throws(() => unwrapResult("m", "OpaqueRef:1"), XenApiProtocolError);
    assert.throws(() => unwrapResult("m", { Status: "Success" }), /no Value/);
    assert.throws(() => unwrapResult("m", { Status: "Maybe", Value: 1 }), /"Maybe", not Success or Failure/);
    assert.throws(
      () => unwrapResult("m", { Status: "Failure", ErrorDescription: [1] }),
      /not a list of strings/,
    );
    assert.throws(
      () => unwrapResult("m", { Status: "Failure", ErrorDescription: [] }),
      /not a list of strings/,
    );
  });
});
