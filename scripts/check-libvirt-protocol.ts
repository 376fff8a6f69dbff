/**
 * Checks the hand-written procedure numbers in src/backends/libvirt/protocol.ts
 * against a copy of libvirt's src/remote/remote_protocol.x (not kept in this
 * repository: take it from a libvirt source tree of the version you care about).
 *
 * Usage: node dist/scripts/check-libvirt-protocol.js PATH/TO/remote_protocol.x
 * Exit status 1 when a number differs or a procedure is missing.
 */
import { readFileSync } from "node:fs";
import { Proc } from "../src/backends/libvirt/protocol.js";

const path = process.argv[2];
if (path === undefined) {
  console.error("usage: check-libvirt-protocol PATH/TO/remote_protocol.x");
  process.exit(2);
}
const text = readFileSync(path, "utf8");
const defined = new Map<string, number>();
for (const m of text.matchAll(/\bREMOTE_PROC_([A-Z0-9_]+)\s*=\s*(\d+)/g)) defined.set(m[1]!, Number(m[2]));
let bad = 0;
for (const [name, number] of Object.entries(Proc)) {
  const theirs = defined.get(name);
  if (theirs === undefined) {
    console.log(`missing  REMOTE_PROC_${name} (ours: ${number})`);
    bad++;
  } else if (theirs !== number) {
    console.log(`DIFFERS  REMOTE_PROC_${name}: ours ${number}, remote_protocol.x ${theirs}`);
    bad++;
  } else {
    console.log(`ok       REMOTE_PROC_${name} = ${number}`);
  }
}
console.log(`${Object.keys(Proc).length - bad} of ${Object.keys(Proc).length} procedures match ${path}`);
process.exit(bad === 0 ? 0 : 1);
