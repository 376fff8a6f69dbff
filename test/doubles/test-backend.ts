/**
 * A small in-memory VmBackend for the summoner's unit tests: the backend
 * boundary, with hooks to hold an operation until the test releases it.
 */
import type { BackendEvent, StopMode, VmBackend, VmRef, VmState } from "../../src/backends/contract.js";
import { buildVmSpec, parseConfigString, type VmSpec } from "../../src/config/index.js";

export interface Deferred<T = void> {
  promise: Promise<T>;
  resolve(value: T): void;
  reject(err: Error): void;
}

export function deferred<T = void>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Tracks whether a promise has settled, without awaiting it. */
export function track<T>(p: Promise<T>): { settled: boolean; value?: T; error?: unknown } {
  const t: { settled: boolean; value?: T; error?: unknown } = { settled: false };
  p.then(
    (v) => {
      t.settled = true;
      t.value = v;
    },
    (e: unknown) => {
      t.settled = true;
      t.error = e;
    },
  );
  return t;
}

export function spec(config: string): VmSpec {
  return buildVmSpec(parseConfigString(config, "CONFIG #1"), "CONFIG #1", {
    backendKeys: [{ key: "name", type: "string", doc: "VM name" }],
    backendName: "test",
  });
}

type Op = "start" | "resume" | "unpause" | "stop";

export class TestBackend implements VmBackend {
  readonly name = "test";
  readonly states = new Map<string, VmState>();
  readonly calls: string[] = [];
  /**
   * When set, the operation waits for this promise (given the VM's label)
   * before changing the state; a rejection fails the operation.
   */
  readonly hold: Partial<Record<Op | "state", (label: string) => Promise<void>>> = {};
  private readonly listeners: ((e: BackendEvent) => void)[] = [];

  async connect(): Promise<void> {}

  async resolve(s: VmSpec): Promise<VmRef> {
    if (!this.states.has(s.label)) this.states.set(s.label, "off");
    return { label: s.label, ref: `ref-${s.label}` };
  }

  async state(vm: VmRef): Promise<VmState> {
    this.calls.push(`state:${vm.label}`);
    await this.hold.state?.(vm.label);
    return this.states.get(vm.label) ?? "unknown";
  }

  async start(vm: VmRef): Promise<void> {
    await this.op("start", vm, "running");
  }

  async resume(vm: VmRef): Promise<void> {
    await this.op("resume", vm, "running");
  }

  async unpause(vm: VmRef): Promise<void> {
    await this.op("unpause", vm, "running");
  }

  async stop(vm: VmRef, mode: StopMode): Promise<void> {
    const next: VmState =
      mode === "pause" ? "paused" : mode === "suspend" || mode === "save" ? "suspended" : "off";
    this.calls.push(`stop:${vm.label}:${mode}`);
    await this.hold.stop?.(vm.label);
    this.states.set(vm.label, next);
  }

  onEvent(listener: (e: BackendEvent) => void): void {
    this.listeners.push(listener);
  }

  emit(event: BackendEvent): void {
    for (const l of this.listeners) l(event);
  }

  async close(): Promise<void> {}

  /** Calls other than state reads. */
  ops(): string[] {
    return this.calls.filter((c) => !c.startsWith("state:"));
  }

  private async op(name: Op, vm: VmRef, next: VmState): Promise<void> {
    this.calls.push(`${name}:${vm.label}`);
    await this.hold[name]?.(vm.label);
    this.states.set(vm.label, next);
  }
}
