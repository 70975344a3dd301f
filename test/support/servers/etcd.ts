import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensureBinary } from "../binaries.js";
import { freePort, waitForPort } from "../net.js";
import { TcpProxy } from "../tcp-proxy.js";

/** An etcd server for tests: its client endpoint and fault controls. */
export interface EtcdServer {
  /** `http://127.0.0.1:PORT`, for `new Etcd3({ hosts: endpoint })`. */
  readonly endpoint: string;
  /** Whether this module started the process (false: `ETCD_ENDPOINTS` was used). */
  readonly managed: boolean;
  /** Stops the server (SIGTERM, SIGKILL after 3 s) and removes its data dir. */
  stop(): Promise<void>;
  /** SIGKILLs the server, as a crash; it stays down until {@link restart}. */
  kill(): Promise<void>;
  /** Freezes the server: connections stay open, nothing answers (SIGSTOP; a blackhole for ETCD_ENDPOINTS). */
  pause(): void;
  /** Thaws a paused server. */
  resume(): void;
  /** Kills the server if running and starts it again on the same ports; `wipe` empties its data dir first (state loss). */
  restart(options?: { wipe?: boolean }): Promise<void>;
}

const running = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

/**
 * startEtcd starts an etcd for a test: the first endpoint of `ETCD_ENDPOINTS` (comma-separated)
 * if set, behind a TcpProxy so {@link EtcdServer.pause} can blackhole it (kill and restart then
 * throw); else a fresh single-member `etcd` (Debian package `etcd-server`, installed on first use
 * when running as root) on free 127.0.0.1 ports with a fresh temp data dir and fast raft timings.
 */
export async function startEtcd(): Promise<EtcdServer> {
  const endpoints = process.env.ETCD_ENDPOINTS;
  if (endpoints) {
    const first = endpoints.split(",").map((e) => e.trim()).filter(Boolean)[0];
    if (!first) throw new Error(`ETCD_ENDPOINTS is set but lists no endpoint: ${JSON.stringify(endpoints)}`);
    return external(first);
  }
  return launch();
}

async function external(endpoint: string): Promise<EtcdServer> {
  const url = new URL(endpoint.includes("://") ? endpoint : `http://${endpoint}`);
  const proxy = new TcpProxy(Number(url.port || 2379), url.hostname);
  const port = await proxy.start();
  const unsupported = (what: string) => async (): Promise<void> => {
    throw new Error(`${what} is not possible on an etcd from ETCD_ENDPOINTS (${endpoint}); unset ETCD_ENDPOINTS to let the tests start their own etcd`);
  };
  return {
    endpoint: `http://127.0.0.1:${port}`,
    managed: false,
    stop: () => proxy.stop(),
    kill: unsupported("kill"),
    pause: () => proxy.blackhole(),
    resume: () => proxy.heal(),
    restart: unsupported("restart"),
  };
}

async function launch(): Promise<EtcdServer> {
  const binary = ensureBinary("etcd", "etcd-server", "ETCD_ENDPOINTS");
  const [clientPort, peerPort] = [await freePort(), await freePort()];
  const dataRoot = mkdtempSync(join(tmpdir(), "prl-etcd-"));
  const dataDir = join(dataRoot, "data");
  let child: ChildProcess | null = null;

  const exited = (proc: ChildProcess): Promise<void> =>
    proc.exitCode !== null || proc.signalCode !== null
      ? Promise.resolve()
      : new Promise((resolve) => proc.once("exit", () => resolve()));

  const start = async (): Promise<void> => {
    const client = `http://127.0.0.1:${clientPort}`;
    const peer = `http://127.0.0.1:${peerPort}`;
    const proc = spawn(
      binary,
      [
        "--name", "prl-test",
        "--data-dir", dataDir,
        "--listen-client-urls", client,
        "--advertise-client-urls", client,
        "--listen-peer-urls", peer,
        "--initial-advertise-peer-urls", peer,
        "--initial-cluster", `prl-test=${peer}`,
        "--initial-cluster-state", "new",
        // A single member elects itself at once; short timings keep restarts fast.
        "--heartbeat-interval", "20",
        "--election-timeout", "200",
        "--logger", "zap",
        "--log-level", "error",
      ],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    let stderr = "";
    proc.stderr?.on("data", (chunk: Buffer) => {
      stderr = (stderr + chunk.toString()).slice(-4000);
    });
    running.add(proc);
    proc.once("exit", () => running.delete(proc));
    child = proc;
    try {
      await waitForPort(clientPort, `etcd (${binary})`, 20_000);
      await waitHealthy(client, 20_000);
    } catch (error) {
      proc.kill("SIGKILL");
      throw new Error(`${(error as Error).message}\netcd stderr:\n${stderr}`);
    }
  };

  const killNow = async (): Promise<void> => {
    const proc = child;
    if (!proc) return;
    const done = exited(proc);
    proc.kill("SIGCONT");
    proc.kill("SIGKILL");
    await done;
    child = null;
  };

  await start();
  return {
    endpoint: `http://127.0.0.1:${clientPort}`,
    managed: true,
    async stop() {
      const proc = child;
      if (proc) {
        const done = exited(proc);
        proc.kill("SIGCONT");
        proc.kill("SIGTERM");
        const timer = setTimeout(() => proc.kill("SIGKILL"), 3000);
        await done;
        clearTimeout(timer);
        child = null;
      }
      rmSync(dataRoot, { recursive: true, force: true });
    },
    kill: killNow,
    pause() {
      child?.kill("SIGSTOP");
    },
    resume() {
      child?.kill("SIGCONT");
    },
    async restart(options = {}) {
      await killNow();
      if (options.wipe) rmSync(dataDir, { recursive: true, force: true });
      await start();
    },
  };
}

/** Resolves once etcd's `/health` reports healthy (it has a leader and serves reads). */
async function waitHealthy(client: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  for (;;) {
    try {
      const response = await fetch(`${client}/health`, { signal: AbortSignal.timeout(1000) });
      last = await response.text();
      if (response.ok && /"health"\s*:\s*"true"/.test(last)) return;
    } catch (error) {
      last = (error as Error).message;
    }
    if (Date.now() > deadline) throw new Error(`etcd at ${client} did not become healthy within ${timeoutMs} ms (${last})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
