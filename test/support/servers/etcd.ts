import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type { LeaseBackend } from "../../../src/contract/lease-backend.js";
import { validatePlan } from "../../../src/contract/plan.js";
import { ensureBinary } from "../binaries.js";
import { freePort, waitForPort } from "../net.js";
import { TcpProxy } from "../tcp-proxy.js";
import { refuseIfExternalOnly } from "./child.js";

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
  /**
   * Saves a snapshot now (`etcdctl snapshot save`) and returns a function that restores it as an
   * operator would: stop the server, `etcdctl snapshot restore` into a new data dir, start it on the
   * same ports. `token: "new"` (the default) restores with a new `--initial-cluster-token`, which
   * gives a new cluster ID; `"same"` keeps the token, and then the cluster ID and member ID are the
   * original's (etcd derives them from the token, names and peer URLs).
   */
  snapshot(): Promise<(options?: { token?: "new" | "same" }) => Promise<void>>;
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
  return launchEtcd();
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
    snapshot: async () => {
      throw new Error(`snapshot is not possible on an etcd from ETCD_ENDPOINTS (${endpoint}); unset ETCD_ENDPOINTS to let the tests start their own etcd`);
    },
  };
}

/**
 * Starts a fresh single-member etcd on `clientPort` / `peerPort` (default: free ports) of
 * 127.0.0.1, whatever ETCD_ENDPOINTS says: for tests that kill it, and for
 * scripts/test-external-servers.ts.
 */
export async function launchEtcd(options: { clientPort?: number; peerPort?: number } = {}): Promise<EtcdServer> {
  refuseIfExternalOnly("etcd", "ETCD_ENDPOINTS");
  const binary = ensureBinary("etcd", "etcd-server", "ETCD_ENDPOINTS");
  const clientPort = options.clientPort ?? (await freePort());
  const peerPort = options.peerPort ?? (await freePort());
  const dataRoot = mkdtempSync(join(tmpdir(), "prl-etcd-"));
  let dataDir = join(dataRoot, "data");
  let token = "prl-test-1";
  let generation = 1;
  let child: ChildProcess | null = null;
  const client = `http://127.0.0.1:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;

  const exited = (proc: ChildProcess): Promise<void> =>
    proc.exitCode !== null || proc.signalCode !== null
      ? Promise.resolve()
      : new Promise((resolve) => proc.once("exit", () => resolve()));

  const start = async (): Promise<void> => {
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
        "--initial-cluster-token", token,
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
    async snapshot() {
      const etcdctl = ensureBinary("etcdctl", "etcd-client", "ETCD_ENDPOINTS");
      const file = join(dataRoot, `snapshot-${++generation}.db`);
      const env = { ...process.env, ETCDCTL_API: "3" };
      await run(etcdctl, ["--endpoints", client, "snapshot", "save", file], { env });
      return async ({ token: which = "new" } = {}) => {
        await killNow();
        if (which === "new") token = `prl-test-${generation}`;
        dataDir = join(dataRoot, `restored-${generation}-${which}`);
        rmSync(dataDir, { recursive: true, force: true });
        await run(
          etcdctl,
          ["snapshot", "restore", file, "--data-dir", dataDir, "--name", "prl-test", "--initial-cluster", `prl-test=${peer}`,
            "--initial-cluster-token", token, "--initial-advertise-peer-urls", peer],
          { env },
        );
        await start();
      };
    },
  };
}

const execFileAsync = promisify(execFile);

async function run(binary: string, args: string[], options: { env: NodeJS.ProcessEnv }): Promise<void> {
  try {
    await execFileAsync(binary, args, { ...options, timeout: 20_000 });
  } catch (error) {
    const e = error as Error & { stderr?: string };
    throw new Error(`${binary} ${args.join(" ")} failed: ${e.message}\n${e.stderr ?? ""}`);
  }
}

/**
 * Resolves once `backend` grants a lease of `ttlMs` on a throwaway resource. An etcd just started or
 * restored has a server clock younger than one TTL and rightly grants nothing before that (see
 * EtcdLeaseBackend); tests that expect grants at once call this first. Returns how long it took.
 */
export async function untilGranting(backend: LeaseBackend, ttlMs: number): Promise<number> {
  const started = Date.now();
  const resource = `warmup-${started}-${Math.random().toString(36).slice(2, 8)}`;
  const plan = validatePlan({ limit: 10, intervalMs: 1000, partitions: 1, leaseTtlMs: ttlMs });
  const stored = await backend.ensurePlan(resource, plan, { history: "fresh", timeoutMs: 5000 });
  for (;;) {
    const result = await backend.tryAcquire({ resource, plan: stored, candidates: [0], holderId: "warmup" }, { timeoutMs: 5000 });
    if (result.kind === "granted") {
      await backend.release(result.lease, { timeoutMs: 5000 });
      return Date.now() - started;
    }
    if (result.kind !== "grace" || Date.now() - started > 90_000) throw new Error(`warm-up on a fresh etcd: ${JSON.stringify(result)}`);
    await new Promise((resolve) => setTimeout(resolve, Math.min(result.remainingMs, 250)));
  }
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
