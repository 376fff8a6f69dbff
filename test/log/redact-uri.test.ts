/**
 * redactUri: the password of a URI given with -c never reaches a log line or
 * an error message; everything else of the URI is kept as given.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { redactUri } from "../../src/log/index.js";

test("hides the password, keeps the user, host, port, path and query", () => {
  assert.equal(
    redactUri("https://root:s3cret@xapi.example:8443/p?insecure=1"),
    "https://root:***@xapi.example:8443/p?insecure=1",
  );
  assert.equal(redactUri("http://root:s3cret@host"), "http://root:***@host");
  assert.equal(redactUri("HTTPS://root:s3cret@host/"), "HTTPS://root:***@host/");
  assert.equal(redactUri("qemu+ssh://admin:pw@kvm/system"), "qemu+ssh://admin:***@kvm/system");
});

test("a password containing ':' is hidden whole", () => {
  assert.equal(redactUri("https://root:a:b:c@host/"), "https://root:***@host/");
});

test("a password containing '@' is hidden whole (the authority ends at the last '@')", () => {
  assert.equal(redactUri("https://root:p@ss@host/x"), "https://root:***@host/x");
  assert.equal(redactUri("https://root:p@s@s@host:443"), "https://root:***@host:443");
});

test("an empty password is shown as hidden too", () => {
  assert.equal(redactUri("https://root:@host/"), "https://root:***@host/");
});

test("URIs without a password are returned as they are", () => {
  for (const uri of [
    "https://host/",
    "https://root@host/",
    "https://host:443/path",
    "qemu:///system",
    "test+unix:///default?socket=/tmp/lv/run/libvirt-sock",
    "xen:///",
    "",
    "not a uri: x:y@z",
  ]) {
    assert.equal(redactUri(uri), uri);
  }
});
