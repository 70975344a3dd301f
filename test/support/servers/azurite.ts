import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { freePort, waitForPort } from "../net.js";
import { TcpProxy } from "../tcp-proxy.js";
import { refuseIfExternalOnly } from "./child.js";

// No jest imports here: the demo (`npm run demo`) starts its embedded Azurite with this module too.

/** The well-known key of Azurite's development account `devstoreaccount1` (public, not a secret). */
const DEV_ACCOUNT = "devstoreaccount1";
const DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/** AzuriteServer is one Azurite (Blob + Queue) for tests and the demo. */
export interface AzuriteServer {
  /** A connection string for `BlobServiceClient.fromConnectionString` / `QueueServiceClient`. */
  readonly connectionString: string;
  /** The Blob service port (for AZURE_STORAGE_CONNECTION_STRING: the port of the proxy in front of it; 0 if the string names no Blob endpoint). */
  readonly blobPort: number;
  /** The Queue service port (0 when unknown). */
  readonly queuePort: number;
  /** Whether this module started the process (false: `AZURE_STORAGE_CONNECTION_STRING` was used). */
  readonly managed: boolean;
  /** Stops the process (SIGTERM, then SIGKILL after 3 s) and waits for it to exit. */
  stop(): Promise<void>;
  /** Kills the process at once (SIGKILL), as a crash; resolves when it has exited. */
  kill(): Promise<void>;
  /** Freezes the process (SIGSTOP): connections stay open, nothing answers. */
  pause(): void;
  /** Thaws a paused process (SIGCONT). */
  resume(): void;
  /** Kills the process and starts a new one on the same ports, with empty (in-memory) state. */
  restart(): Promise<void>;
}

/**
 * startAzurite starts Azurite for tests and the demo. When `AZURE_STORAGE_CONNECTION_STRING` is
 * set it uses that server and starts nothing: its Blob and Queue endpoints are reached through a
 * TcpProxy each, so pause/resume stall and heal them (kill and restart throw, since a server this
 * module did not start must not be killed). Otherwise it runs the `azurite` package
 * from node_modules as a child process on free ports with in-memory persistence, so every start
 * (and {@link AzuriteServer.restart}) begins empty. Rejects with a clear message if Azurite cannot
 * be found or does not start within `startTimeoutMs`.
 */
export async function startAzurite(options: { startTimeoutMs?: number } = {}): Promise<AzuriteServer> {
  const external = process.env.AZURE_STORAGE_CONNECTION_STRING;
  if (external) return externalServer(external);
  return launchAzurite(options);
}

/**
 * Starts Azurite as a child process on the given ports (default: free ports), whatever
 * AZURE_STORAGE_CONNECTION_STRING says: for tests that kill it, and for scripts/test-external-servers.ts.
 */
export async function launchAzurite(
  options: { startTimeoutMs?: number; blobPort?: number; queuePort?: number; tablePort?: number } = {},
): Promise<AzuriteServer> {
  refuseIfExternalOnly("Azurite", "AZURE_STORAGE_CONNECTION_STRING");
  const script = findAzuriteScript();
  const blobPort = options.blobPort ?? (await freePort());
  const queuePort = options.queuePort ?? (await freePort());
  const tablePort = options.tablePort ?? (await freePort());
  const startTimeoutMs = options.startTimeoutMs ?? 30_000;
  let child = await launch(script, blobPort, queuePort, tablePort, startTimeoutMs);

  const exited = (proc: ChildProcess): Promise<void> =>
    proc.exitCode !== null || proc.signalCode !== null
      ? Promise.resolve()
      : new Promise((resolve) => proc.once("exit", () => resolve()));
  const killNow = async (): Promise<void> => {
    const proc = child;
    const done = exited(proc);
    proc.kill("SIGKILL");
    await done;
  };

  return {
    connectionString: connectionStringFor(blobPort, queuePort),
    blobPort,
    queuePort,
    managed: true,
    async stop() {
      const proc = child;
      const done = exited(proc);
      proc.kill("SIGCONT");
      proc.kill("SIGTERM");
      const timer = setTimeout(() => proc.kill("SIGKILL"), 3000);
      await done;
      clearTimeout(timer);
      forget(proc);
    },
    async kill() {
      await killNow();
      forget(child);
    },
    pause() {
      child.kill("SIGSTOP");
    },
    resume() {
      child.kill("SIGCONT");
    },
    async restart() {
      await killNow();
      forget(child);
      child = await launch(script, blobPort, queuePort, tablePort, startTimeoutMs);
    },
  };
}

/** The connection string of a local Azurite with the development account. */
export function connectionStringFor(blobPort: number, queuePort: number, host = "127.0.0.1"): string {
  return (
    `DefaultEndpointsProtocol=http;AccountName=${DEV_ACCOUNT};AccountKey=${DEV_KEY};` +
    `BlobEndpoint=http://${host}:${blobPort}/${DEV_ACCOUNT};QueueEndpoint=http://${host}:${queuePort}/${DEV_ACCOUNT};`
  );
}

async function externalServer(connectionString: string): Promise<AzuriteServer> {
  const refuse = (): never => {
    throw new Error("AZURE_STORAGE_CONNECTION_STRING points at a server this test did not start; it cannot be stopped or restarted. Unset it to let the test start Azurite itself.");
  };
  // A proxy in front of each endpoint the string names, and the string rewritten to use them.
  const proxies: TcpProxy[] = [];
  const ports: Record<string, number> = {};
  let rewritten = connectionString;
  for (const name of ["Blob", "Queue"]) {
    const match = new RegExp(`(${name}Endpoint=https?://)([^:/;]+):(\\d+)`, "i").exec(connectionString);
    if (!match) continue;
    const proxy = new TcpProxy(Number(match[3]), match[2]);
    ports[name] = await proxy.start();
    proxies.push(proxy);
    rewritten = rewritten.replace(match[0], `${match[1]}127.0.0.1:${ports[name]}`);
  }
  return {
    connectionString: rewritten,
    blobPort: ports.Blob ?? 0,
    queuePort: ports.Queue ?? 0,
    managed: false,
    stop: async () => {
      await Promise.all(proxies.map((p) => p.stop()));
    },
    kill: async () => refuse(),
    pause: () => {
      for (const p of proxies) p.blackhole("hold");
    },
    resume: () => {
      for (const p of proxies) p.heal();
    },
    restart: async () => refuse(),
  };
}

/** Finds `azurite/dist/src/azurite.js` in node_modules from the working directory upwards. */
function findAzuriteScript(): string {
  for (let dir = process.cwd(); ; dir = dirname(dir)) {
    const candidate = join(dir, "node_modules", "azurite", "dist", "src", "azurite.js");
    if (existsSync(candidate)) return candidate;
    if (dirname(dir) === dir) break;
  }
  throw new Error("Azurite was not found in node_modules (npm install azurite@3.35.0), and AZURE_STORAGE_CONNECTION_STRING is not set.");
}

const running = new Set<ChildProcess>();
let exitHookInstalled = false;

function forget(proc: ChildProcess): void {
  running.delete(proc);
}

async function launch(script: string, blobPort: number, queuePort: number, tablePort: number, timeoutMs: number): Promise<ChildProcess> {
  const args = [
    script,
    "--silent",
    "--inMemoryPersistence",
    "--skipApiVersionCheck",
    "--disableTelemetry",
    "--blobHost", "127.0.0.1", "--blobPort", String(blobPort),
    "--queueHost", "127.0.0.1", "--queuePort", String(queuePort),
    "--tableHost", "127.0.0.1", "--tablePort", String(tablePort),
  ];
  const child = spawn(process.execPath, args, { stdio: ["ignore", "ignore", "pipe"] });
  running.add(child);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    // A test runner that exits without calling stop() must not leave Azurite behind.
    process.once("exit", () => {
      for (const proc of running) proc.kill("SIGKILL");
    });
  }
  let stderr = "";
  child.stderr?.on("data", (chunk: Buffer) => {
    if (stderr.length < 4000) stderr += chunk.toString();
  });
  const early = new Promise<never>((_, reject) => {
    child.once("exit", (code, signal) =>
      reject(new Error(`Azurite exited during start-up (code ${code}, signal ${signal}): ${stderr.trim() || "no output"}`)),
    );
    child.once("error", reject);
  });
  early.catch(() => undefined);
  try {
    await Promise.race([
      Promise.all([waitForPort(blobPort, "Azurite blob", timeoutMs), waitForPort(queuePort, "Azurite queue", timeoutMs)]),
      early,
    ]);
  } catch (error) {
    child.kill("SIGKILL");
    forget(child);
    throw error;
  }
  child.stderr?.resume();
  return child;
}
