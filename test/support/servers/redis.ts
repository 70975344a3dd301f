import { spawn, type ChildProcess } from "node:child_process";
import { ensureBinary } from "../binaries.js";
import { freePort, waitForPort } from "../net.js";

/** A Redis server for tests: its URL and, when this process started it, fault controls. */
export interface RedisServer {
  /** `redis://127.0.0.1:PORT`. */
  readonly url: string;
  readonly port: number;
  /** Stops the server (a no-op for a server from REDIS_URL / REDLOCK_URLS). */
  stop(): Promise<void>;
  /** SIGKILLs the server: connections drop, state is lost. */
  kill(): Promise<void>;
  /** SIGSTOPs the server: connections stay open, nothing is answered. */
  pause(): void;
  /** SIGCONTs a paused server. */
  resume(): void;
  /** Kills the server if running and starts a fresh one (empty) on the same port. */
  restart(): Promise<void>;
}

const running = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

/**
 * Starts a Redis for a test: the one at `REDIS_URL` if set (fault controls then throw), else a
 * fresh `redis-server` on a free port of 127.0.0.1 without persistence.
 */
export async function startRedis(): Promise<RedisServer> {
  const url = process.env.REDIS_URL;
  return url ? external(url, "REDIS_URL") : launch();
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
    return list.map((u) => external(u, "REDLOCK_URLS"));
  }
  return Promise.all([launch(), launch(), launch()]);
}

function external(url: string, envName: string): RedisServer {
  const unsupported = (what: string) => () => {
    throw new Error(`${what} is not possible on a Redis from ${envName} (${url}); unset ${envName} to let the tests start their own redis-server`);
  };
  return {
    url,
    port: Number(new URL(url).port || 6379),
    stop: async () => undefined,
    kill: async () => unsupported("kill")(),
    pause: unsupported("pause"),
    resume: unsupported("resume"),
    restart: async () => unsupported("restart")(),
  };
}

async function launch(): Promise<RedisServer> {
  const binary = ensureBinary("redis-server", "redis-server", "REDIS_URL");
  const port = await freePort();
  let child: ChildProcess | null = null;

  const start = async () => {
    const proc = spawn(binary, ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
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
    stop: kill,
    kill,
    pause: () => child?.kill("SIGSTOP"),
    resume: () => child?.kill("SIGCONT"),
    restart: async () => {
      await kill();
      await start();
    },
  };
}
