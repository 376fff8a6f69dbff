/** WATCHDOG_USEC/WATCHDOG_PID and LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES parsing (src/systemd). */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { listenFds, watchdogInterval } from "../../src/systemd/index.js";

describe("systemd environment", () => {
  it("watchdog: half of WATCHDOG_USEC, only for us", () => {
    assert.equal(watchdogInterval({ WATCHDOG_USEC: "30000000" }, 42), 15_000);
    assert.equal(watchdogInterval({ WATCHDOG_USEC: "30000000", WATCHDOG_PID: "42" }, 42), 15_000);
    assert.equal(watchdogInterval({ WATCHDOG_USEC: "30000000", WATCHDOG_PID: "7" }, 42), null);
    for (const bad of [undefined, "", "0", "-5", "1e6", "ten"])
      assert.equal(watchdogInterval({ WATCHDOG_USEC: bad }, 42), null, String(bad));
  });

  it("listen fds: from 3, with names, only for our pid, and taken out of the environment", () => {
    const env: NodeJS.ProcessEnv = { LISTEN_FDS: "3", LISTEN_PID: "42", LISTEN_FDNAMES: "dns:dns:http" };
    assert.deepEqual(listenFds(env, 42), [
      { fd: 3, name: "dns" },
      { fd: 4, name: "dns" },
      { fd: 5, name: "http" },
    ]);
    assert.deepEqual(env, {});
    assert.deepEqual(listenFds({ LISTEN_FDS: "2", LISTEN_PID: "7" }, 42), []);
    assert.deepEqual(listenFds({ LISTEN_FDS: "1" }, 42), [{ fd: 3, name: "unknown" }]);
    assert.throws(() => listenFds({ LISTEN_FDS: "x", LISTEN_PID: "42" }, 42), /LISTEN_FDS is 'x'/);
  });
});
