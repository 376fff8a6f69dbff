import { strict as assert } from "node:assert";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import {
  buildFileSpecs,
  mergeOptions,
  parseConfigText,
  readConfigFile,
  type BuildSpecOptions,
  type FileOptionSpec,
} from "../../src/config/index.js";
import { ConfigError } from "../../src/errors/index.js";

const OPTIONS: FileOptionSpec[] = [
  { name: "bind", takesValue: true },
  { name: "forwarder", takesValue: true },
  { name: "ttl", takesValue: true },
  { name: "delay", takesValue: true },
  { name: "backend", takesValue: true },
  { name: "persistdb", takesValue: true },
  { name: "start-timeout", takesValue: true },
  { name: "config", takesValue: true },
  { name: "stop-on-exit", takesValue: false },
];

const BUILD: BuildSpecOptions = {
  backendName: "process",
  backendKeys: [
    { key: "name", type: "string", doc: "" },
    { key: "command", type: "string", required: true, doc: "" },
    { key: "arg", type: "string", repeatable: true, doc: "" },
  ],
};

function configError(pattern: RegExp): (err: unknown) => true {
  return (err) => {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    assert.match(err.message, pattern);
    assert.ok(!err.message.includes("\n"), `one line: ${err.message}`);
    return true;
  };
}

const YAML_TEXT = `
# global options use the command line's long names
ttl: 30
forwarder: 0.0.0.0
delay: 0.10
stop-on-exit: yes
start-timeout: 20
vms:
  - name: www
    dns: [www.example.org, Example.org.]
    ip:
      - 10.0.0.1
      - 2001:db8::1
    command: /usr/bin/python3
    arg: [-m, http.server, "8080"]
    response_delay: 0.5
  - "dns=mail.example.org,ip=10.0.0.2,name=mail,command=/bin/sleep,arg=600"
  - name: 0123
    dns: n.example.org
    ip: 10.0.0.3
    command: /bin/true
    use_synjitsu: false
`;

test("YAML: options as text, VMs as maps (lists repeat a key) or CONFIG strings", () => {
  const file = parseConfigText(YAML_TEXT, "/etc/jitsu.yaml", OPTIONS);
  assert.deepEqual(file.options, {
    ttl: "30",
    forwarder: "0.0.0.0",
    delay: "0.10",
    "stop-on-exit": true,
    "start-timeout": "20",
  });
  assert.deepEqual(
    file.vms.map((v) => [v.index, v.label]),
    [
      [1, "www"],
      [2, "mail"],
      [3, "0123"],
    ],
  );
  assert.deepEqual(file.vms[0]!.pairs, [
    ["name", "www"],
    ["dns", "www.example.org"],
    ["dns", "Example.org."],
    ["ip", "10.0.0.1"],
    ["ip", "2001:db8::1"],
    ["command", "/usr/bin/python3"],
    ["arg", "-m"],
    ["arg", "http.server"],
    ["arg", "8080"],
    ["response_delay", "0.5"],
  ]);
  const specs = buildFileSpecs(file, BUILD);
  assert.deepEqual(specs[0]!.dns, ["www.example.org", "example.org"]);
  assert.deepEqual(specs[0]!.ips, ["10.0.0.1", "2001:db8::1"]);
  assert.equal(specs[0]!.responseDelay, 0.5);
  assert.deepEqual(specs[0]!.options.all("arg"), ["-m", "http.server", "8080"]);
  assert.equal(specs[1]!.label, "mail");
  assert.deepEqual(specs[1]!.options.all("arg"), ["600"]);
  assert.equal(specs[2]!.name, "0123");
  assert.equal(specs[2]!.useSynjitsu, false);
});

test("JSON: numbers and booleans become CONFIG text; the same VMs as YAML", () => {
  const json = JSON.stringify({
    ttl: 30,
    "stop-on-exit": false,
    vms: [
      {
        name: "www",
        dns: ["www.example.org"],
        ip: "10.0.0.1",
        command: "/bin/sleep",
        arg: [600],
        use_synjitsu: true,
      },
    ],
  });
  const file = parseConfigText(json, "jitsu.json", OPTIONS);
  assert.deepEqual(file.options, { ttl: "30" });
  const [spec] = buildFileSpecs(file, BUILD);
  assert.deepEqual(spec!.options.all("arg"), ["600"]);
  assert.equal(spec!.useSynjitsu, true);
  // Without a telling extension, the content decides.
  assert.deepEqual(parseConfigText(json, "jitsu.conf", OPTIONS).options, { ttl: "30" });
  assert.deepEqual(parseConfigText("ttl: 5\n", "jitsu.conf", OPTIONS).options, { ttl: "5" });
});

test("JSON: a key twice in one object is an error saying where, however it is spelled", () => {
  const cases: [text: string, pattern: RegExp][] = [
    ['{"ttl": 1, "ttl": 2}', /^config file 'j.json': invalid JSON at line 1, column 12: .*unique/i],
    [
      '{"vms": [{"name": "a",\n  "name": "b"}]}',
      /^config file 'j.json': invalid JSON at line 2, column 3: .*unique/i,
    ],
    ['{"ttl": 1, "\\u0074tl": 2}', /^config file 'j.json': invalid JSON at line 1, column 12: .*unique/i],
  ];
  for (const [text, pattern] of cases) {
    assert.throws(() => parseConfigText(text, "j.json", OPTIONS), configError(pattern), text);
  }
  // The same key in different objects, and keys inside string values, are fine.
  const ok = parseConfigText(
    JSON.stringify({
      ttl: 5,
      vms: [
        { name: "a", dns: "a.example.org", ip: "10.0.0.1", command: '"ttl": {"ttl", [x]\\' },
        { name: "b", dns: "b.example.org", ip: "10.0.0.2", command: "b" },
      ],
    }),
    "j.json",
    OPTIONS,
  );
  assert.deepEqual(ok.options, { ttl: "5" });
  assert.deepEqual(
    buildFileSpecs(ok, BUILD).map((v) => [v.label, v.options.str("command")]),
    [
      ["a", '"ttl": {"ttl", [x]\\'],
      ["b", "b"],
    ],
  );
});

test("an empty file is no options and no VMs", () => {
  assert.deepEqual(parseConfigText("", "a.yaml", OPTIONS), { path: "a.yaml", options: {}, vms: [] });
  assert.deepEqual(parseConfigText("# nothing\nvms:\n", "a.yaml", OPTIONS).vms, []);
});

test("errors name the file and where in it", () => {
  const cases: [text: string, path: string, pattern: RegExp][] = [
    ["ttl: [1\n", "j.yaml", /^config file 'j.yaml': invalid YAML at line \d+, column \d+: /],
    ["ttl: 1\nttl: 2\n", "j.yaml", /^config file 'j.yaml': invalid YAML at line 2, column 1: .*unique/i],
    ['{"ttl": 1,\n  "bind": }', "j.json", /^config file 'j.json': invalid JSON at line 2, column 11: /],
    [
      '{"ttl": abc}',
      "j.json",
      /^config file 'j.json': invalid JSON at line 1, column 9: Unresolved plain scalar/,
    ],
    [
      "- a\n- b\n",
      "j.yaml",
      /config file 'j.yaml': expected a map of options and 'vms' at the top, got a list/,
    ],
    ["tll: 60\n", "j.yaml", /config file 'j.yaml': unknown option 'tll' \(known: vms, backend, bind,/],
    ["config: other.yaml\n", "j.yaml", /option 'config' cannot be set in a config file/],
    ["ttl: [1, 2]\n", "j.yaml", /config file 'j.yaml': option 'ttl': expected a single value, got a list/],
    ['{"ttl": null}', "j.json", /option 'ttl': expected a single value, got an empty value/],
    ["bind: ''\n", "j.yaml", /option 'bind': expected a value, got an empty one/],
    ["stop-on-exit: maybe\n", "j.yaml", /option 'stop-on-exit': expected true\/false\/1\/0, got 'maybe'/],
    ["vms: www\n", "j.yaml", /'vms' must be a list of VMs, got 'www'/],
    ["vms:\n  - [a, b]\n", "j.yaml", /vms #1: expected a map of CONFIG keys or a CONFIG string, got a list/],
    [
      "vms:\n  - name: web\n    dns: {a: b}\n",
      "j.yaml",
      /vms #1 \(web\): key 'dns': expected a value or a list of values, got a map/,
    ],
    ["vms:\n  - name: web\n    dns: []\n", "j.yaml", /vms #1 \(web\): key 'dns': empty list/],
    ["vms:\n  - ok=1\n  - no-equals-sign\n", "j.yaml", /vms #2: entry 1 'no-equals-sign' has no '='/],
  ];
  for (const [text, path, pattern] of cases) {
    assert.throws(() => parseConfigText(text, path, OPTIONS), configError(pattern), text);
  }
});

test("VM errors from validation name the file, the VM's position and label, and the key", () => {
  const build = (text: string): unknown =>
    buildFileSpecs(parseConfigText(text, "/etc/j.yaml", OPTIONS), BUILD);
  assert.throws(
    () =>
      build(
        "vms:\n  - {name: a, dns: a.example.org, ip: 10.0.0.1, command: x}\n  - {name: web, dns: w.example.org, ip: 10.0.0.300, command: x}\n",
      ),
    configError(
      /^config file '\/etc\/j.yaml': vms #2 \(web\): VM 'web', key 'ip': expected an IPv4 or IPv6 address, got '10.0.0.300'$/,
    ),
  );
  assert.throws(
    () => build("vms:\n  - {dns: w.example.org, ip: 10.0.0.1, command: x, colour: blue}\n"),
    configError(
      /vms #1 \(w.example.org\): VM 'w.example.org', key 'colour': unknown key for the process backend/,
    ),
  );
  assert.throws(
    () => build("vms:\n  - {ip: 10.0.0.1, command: x}\n"),
    configError(/vms #1 \(vms #1\): VM 'vms #1', key 'dns': required key is missing/),
  );
  assert.throws(
    () =>
      build(
        "vms:\n  - {name: a, dns: w.example.org, ip: 10.0.0.1, command: x}\n  - {name: b, dns: W.example.org, ip: 10.0.0.2, command: x}\n",
      ),
    configError(
      /config file '\/etc\/j.yaml': VM 'b', key 'dns': DNS name 'w.example.org' is already used by VM 'a'/,
    ),
  );
});

test("readConfigFile reads from disk; a missing file is a clear error", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "jitsu-config-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, "jitsu.yml");
  await writeFile(path, YAML_TEXT);
  assert.equal(readConfigFile(path, OPTIONS).vms.length, 3);
  assert.throws(
    () => readConfigFile(join(dir, "nope.yaml"), OPTIONS),
    configError(/config file '.*nope.yaml': cannot read it \(no such file\)/),
  );
});

test("command-line values win over the file's; unset and false flags do not", () => {
  assert.deepEqual(
    mergeOptions(
      { ttl: "30", bind: "127.0.0.2", "stop-on-exit": true },
      { ttl: "10", bind: undefined, "stop-on-exit": false, listen: "5353" },
    ),
    { ttl: "10", bind: "127.0.0.2", "stop-on-exit": true, listen: "5353" },
  );
});
