/**
 * How bytes reach xenstored, found the way libxenstore finds it (tools/libs/store/xs.c):
 * `XENSTORED_PATH` if set, else `$XENSTORED_RUNDIR/socket` (default
 * /var/run/xenstored/socket), else the kernel's xenbus device
 * (/dev/xen/xenbus, or /proc/xen/xenbus on old kernels). A unix socket and
 * the xenbus device carry the same wire format.
 */
import { open, stat, type FileHandle } from "node:fs/promises";
import { connect as netConnect, type Socket } from "node:net";

export interface Transport {
  write(bytes: Buffer): void;
  close(): void;
}

export interface TransportEvents {
  data(chunk: Buffer): void;
  /** The connection is gone (`error` says why, if it failed). */
  closed(error?: Error): void;
}

/** Candidate paths in libxenstore's order. */
export function xenstorePaths(env: NodeJS.ProcessEnv = process.env): string[] {
  const explicit = env.XENSTORED_PATH;
  if (explicit !== undefined && explicit !== "") return [explicit];
  const rundir =
    env.XENSTORED_RUNDIR !== undefined && env.XENSTORED_RUNDIR !== ""
      ? env.XENSTORED_RUNDIR
      : "/var/run/xenstored";
  return [`${rundir}/socket`, "/dev/xen/xenbus", "/proc/xen/xenbus"];
}

/** Opens the first path that exists: a socket is connected, anything else is opened as the xenbus device. */
export async function openTransport(
  paths: readonly string[],
  events: TransportEvents,
): Promise<{ transport: Transport; path: string }> {
  const tried: string[] = [];
  for (const path of paths) {
    let isSocket: boolean;
    try {
      isSocket = (await stat(path)).isSocket();
    } catch {
      tried.push(`${path} (missing)`);
      continue;
    }
    if (isSocket) return { transport: await connectSocket(path, events), path };
    return { transport: await openDevice(path, events), path };
  }
  throw new Error(
    `cannot reach xenstored: ${tried.join(", ")}; is xenstored running? (XENSTORED_PATH overrides the path)`,
  );
}

function connectSocket(path: string, events: TransportEvents): Promise<Transport> {
  return new Promise((resolve, reject) => {
    const sock: Socket = netConnect({ path });
    let connected = false;
    sock.once("connect", () => {
      connected = true;
      resolve({
        write: (bytes) => {
          sock.write(bytes);
        },
        close: () => sock.destroy(),
      });
    });
    sock.on("data", (chunk: Buffer) => events.data(chunk));
    let failure: Error | undefined;
    sock.on("error", (err) => {
      failure = err;
      if (!connected) reject(new Error(`cannot connect to xenstored at ${path}: ${err.message}`));
    });
    sock.on("close", () => {
      if (connected) events.closed(failure);
    });
  });
}

/** The xenbus device: each write() is one whole message, read() blocks until a reply or watch event. */
async function openDevice(path: string, events: TransportEvents): Promise<Transport> {
  let fh: FileHandle;
  try {
    fh = await open(path, "r+");
  } catch (err) {
    throw new Error(`cannot open xenbus device ${path}: ${(err as Error).message}`, { cause: err });
  }
  let closed = false;
  let writing: Promise<unknown> = Promise.resolve();
  const finish = (error?: Error): void => {
    if (closed) return;
    closed = true;
    void fh.close().catch(() => undefined);
    events.closed(error);
  };
  void (async () => {
    const buf = Buffer.alloc(4096 + 16);
    while (!closed) {
      try {
        const { bytesRead } = await fh.read(buf, 0, buf.length, null);
        if (bytesRead === 0) return finish();
        events.data(Buffer.from(buf.subarray(0, bytesRead)));
      } catch (err) {
        return finish(err as Error);
      }
    }
  })();
  return {
    write: (bytes) => {
      writing = writing.then(() => fh.write(bytes, 0, bytes.length, null)).catch((err: Error) => finish(err));
    },
    close: () => finish(),
  };
}
