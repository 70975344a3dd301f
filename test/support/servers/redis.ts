import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensureBinary } from "../binaries.js";
import { freePort, waitForPort } from "../net.js";
import { TcpProxy } from "../tcp-proxy.js";
import { refuseIfExternalOnly } from "./child.js";

/** A Redis server for tests: its URL and, when this process started it, fault controls. */
export interface RedisServer {
  /** `redis://127.0.0.1:PORT`. */
  readonly url: string;
  readonly port: number;
  /** Stops the server (for a server from REDIS_URL / REDLOCK_URLS: only the proxy in front of it). */
  stop(): Promise<void>;
  /** SIGKILLs the server: connections drop, state is lost. */
  kill(): Promise<void>;
  /** SIGSTOPs the server: connections stay open, nothing is answered (a held blackhole for REDIS_URL / REDLOCK_URLS). */
  pause(): void;
  /** SIGCONTs a paused server. */
  resume(): void;
  /** Kills the server if running and starts a fresh one (empty) on the same port. */
  restart(): Promise<void>;
  /** Writes a snapshot (`SAVE` to the server's RDB file), as its default persistence would. */
  save(): Promise<void>;
  /** SIGKILLs the server and starts it again on the same port from its last snapshot (a restart from an older RDB file: new `run_id`, plan kept, leases as of the snapshot). */
  restartFromSnapshot(): Promise<void>;
}

const running = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

/**
 * Starts a Redis for a test: the one at `REDIS_URL` if set, reached through a TcpProxy so that
 * {@link RedisServer.pause} can stall it (kill and restart then throw: that server is not ours),
 * else a fresh `redis-server` on a free port of 127.0.0.1 without persistence.
 */
export async function startRedis(): Promise<RedisServer> {
  const url = process.env.REDIS_URL;
  return url ? external(url, "REDIS_URL") : launchRedis();
}

/**
 * Starts three independent Redis servers for Redlock: those at `REDLOCK_URLS` (comma-separated,
 * at least three) if set, else three fresh `redis-server` processes.
 */
export async function startRedisTrio(): Promise<RedisServer[]> {
  const urls = process.env.REDLOCK_URLS;
  if (urls) {
    const list = urls.split(",").map((u) => u.trim()).filter(Boolean);
    if (list.length < 3) throw new Error(`REDLOCK_URLS must list at least 3 Redis URLs, got ${list.length}`);
    return Promise.all(list.map((u) => external(u, "REDLOCK_URLS")));
  }
  return Promise.all([launchRedis(), launchRedis(), launchRedis()]);
}

async function external(url: string, envName: string): Promise<RedisServer> {
  const unsupported = (what: string) => () => {
    throw new Error(`${what} is not possible on a Redis from ${envName} (${url}); unset ${envName} to let the tests start their own redis-server`);
  };
  const target = new URL(url);
  const proxy = new TcpProxy(Number(target.port || 6379), target.hostname);
  const port = await proxy.start();
  const proxied = new URL(url);
  proxied.hostname = "127.0.0.1";
  proxied.port = String(port);
  return {
    url: proxied.toString().replace(/\/$/, ""),
    port,
    stop: () => proxy.stop(),
    kill: async () => unsupported("kill")(),
    pause: () => proxy.blackhole("hold"),
    resume: () => proxy.heal(),
    restart: async () => unsupported("restart")(),
    save: async () => unsupported("save")(),
    restartFromSnapshot: async () => unsupported("restartFromSnapshot")(),
  };
}

/**
 * Starts a fresh `redis-server` (Debian `redis-server`, installed on first use when running as
 * root) on `options.port` (default: a free port) of 127.0.0.1 without persistence, whatever
 * REDIS_URL says: for tests that kill it, and for scripts/test-external-servers.ts.
 */
export async function launchRedis(options: { port?: number } = {}): Promise<RedisServer> {
  refuseIfExternalOnly("redis-server", "REDIS_URL");
  const binary = ensureBinary("redis-server", "redis-server", "REDIS_URL");
  const port = options.port ?? (await freePort());
  // Snapshots only on SAVE: tests decide when one is taken.
  const dir = mkdtempSync(join(tmpdir(), "prl-redis-"));
  let child: ChildProcess | null = null;

  const start = async () => {
    const proc = spawn(binary, ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir, "--dbfilename", "dump.rdb"], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    proc.stderr?.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    running.add(proc);
    proc.once("exit", () => running.delete(proc));
    child = proc;
    try {
      await waitForPort(port, `redis-server (${binary}) ${stderr}`, 20_000);
    } catch (error) {
      proc.kill("SIGKILL");
      throw error;
    }
  };

  const kill = async () => {
    const proc = child;
    child = null;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
    proc.kill("SIGKILL");
    await exited;
  };

  await start();
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    stop: async () => {
      await kill();
      rmSync(dir, { recursive: true, force: true });
    },
    kill,
    pause: () => child?.kill("SIGSTOP"),
    resume: () => child?.kill("SIGCONT"),
    restart: async () => {
      await kill();
      rmSync(join(dir, "dump.rdb"), { force: true });
      await start();
    },
    save: () => command(port, ["SAVE"]),
    restartFromSnapshot: async () => {
      await kill();
      await start();
    },
  };
}

/** Sends one command over a fresh connection and waits for a `+OK`-style reply; rejects on an error reply. */
function command(port: number, args: readonly string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: "127.0.0.1" });
    let reply = "";
    socket.setTimeout(10_000, () => socket.destroy(new Error(`redis ${args.join(" ")}: no reply within 10 s`)));
    socket.once("connect", () => socket.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join("")}`));
    socket.on("data", (chunk) => {
      reply += chunk.toString();
      if (!reply.includes("\r\n")) return;
      socket.end();
      if (reply.startsWith("-")) reject(new Error(`redis ${args.join(" ")}: ${reply.trim()}`));
      else resolve();
    });
    socket.once("error", reject);
  });
}
