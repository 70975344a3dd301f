import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensureBinary } from "../binaries.js";
import { freePort, waitForPort } from "../net.js";
import { pollUntil, refuseIfExternalOnly, spawnChild, type ServerChild } from "./child.js";
import { parseInfo, redisCommand } from "./redis-admin.js";

// No jest imports here: scripts/test-external-servers.ts starts Sentinel with this module too.

/** A Redis primary with replicas watched by Sentinels, for tests: addresses and fault controls. */
export interface RedisSentinelGroup {
  /** The name the Sentinels monitor the primary under (ioredis's `name` option). */
  readonly name: string;
  /** `host:port` of every Sentinel, for ioredis's `sentinels` option. */
  readonly sentinels: readonly { readonly host: string; readonly port: number }[];
  /** Ports of the data nodes (the primary first, as started). */
  readonly dataPorts: readonly number[];
  /** Whether this module started the processes (false: `REDIS_SENTINELS` was used). */
  readonly managed: boolean;
  /** The primary's port as a majority of the Sentinels that answer report it. */
  primary(): Promise<number>;
  /** SIGKILLs the data node on `port`; it stays down until {@link restart}. */
  kill(port: number): Promise<void>;
  /**
   * Starts the data node on `port` again, empty and as a replica of the current primary (as an
   * operator would bring a failed primary back; the Sentinels then keep it a replica).
   */
  restart(port: number): Promise<void>;
  /**
   * Waits until a majority of the Sentinels name a primary other than `formerPort`, and that node
   * reports `role:master`; resolves its port. Rejects after `timeoutMs`.
   */
  waitForFailover(formerPort: number, timeoutMs?: number): Promise<number>;
  /** Ports of the running data nodes that report `role:slave`. */
  replicas(): Promise<number[]>;
  /** Stops every process and removes the data dir (a no-op for `REDIS_SENTINELS`). */
  stop(): Promise<void>;
}

/** Options of {@link startRedisSentinel}. */
export interface RedisSentinelOptions {
  /** Ports of the primary and two replicas. Default: free ports. */
  readonly dataPorts?: readonly number[];
  /** Ports of the three Sentinels. Default: free ports. */
  readonly sentinelPorts?: readonly number[];
  /** The monitored name. Default `"prl"`. */
  readonly name?: string;
  /** `down-after-milliseconds`: how long the primary may be silent before it counts as down. Default 1,000. */
  readonly downAfterMs?: number;
  /** `failover-timeout`, in ms. Default 3,000. */
  readonly failoverTimeoutMs?: number;
  /** How long start-up may take, in ms. Default 60,000. */
  readonly startTimeoutMs?: number;
}

/** Comma-separated `host:port` of external Sentinels. */
export const REDIS_SENTINELS_ENV = "REDIS_SENTINELS";
/** The name the external Sentinels monitor (default `prl`). */
export const REDIS_SENTINEL_NAME_ENV = "REDIS_SENTINEL_NAME";

/**
 * startRedisSentinel starts a Sentinel-managed Redis for a test: the one named by
 * `REDIS_SENTINELS` (and `REDIS_SENTINEL_NAME`, default `prl`) if set (fault controls then throw),
 * else one primary, two replicas and three Sentinels (`redis-server <conf> --sentinel`) on
 * 127.0.0.1, quorum 2, with short `down-after-milliseconds` and `failover-timeout` so that a
 * failover takes a few seconds; it waits until every Sentinel sees both replicas and the other two
 * Sentinels. Rejects with a clear message, never hangs.
 */
export async function startRedisSentinel(options: RedisSentinelOptions = {}): Promise<RedisSentinelGroup> {
  const external = process.env[REDIS_SENTINELS_ENV];
  if (external) return externalGroup(external, process.env[REDIS_SENTINEL_NAME_ENV] || "prl");
  return launchGroup(options);
}

type Endpoint = { readonly host: string; readonly port: number };

/** The primary most Sentinels report (a majority of those that answered), or an error saying why not. */
async function askPrimary(sentinels: readonly Endpoint[], name: string): Promise<number> {
  const votes = new Map<number, number>();
  let answered = 0;
  await Promise.all(
    sentinels.map(async (s) => {
      try {
        const reply = (await redisCommand(s.port, ["SENTINEL", "get-master-addr-by-name", name], 1000, s.host)) as [string, string] | null;
        if (!reply) return;
        answered++;
        const port = Number(reply[1]);
        votes.set(port, (votes.get(port) ?? 0) + 1);
      } catch {
        // A Sentinel that does not answer does not vote.
      }
    }),
  );
  for (const [port, count] of votes) if (count > sentinels.length / 2) return port;
  throw new Error(`no majority of the ${sentinels.length} Sentinels names one primary of "${name}" (${answered} answered: ${JSON.stringify([...votes])})`);
}

function externalGroup(list: string, name: string): RedisSentinelGroup {
  const sentinels = list
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => {
      const url = new URL(s.includes("://") ? s : `redis://${s}`);
      return { host: url.hostname, port: Number(url.port || 26379) };
    });
  if (sentinels.length === 0) throw new Error(`${REDIS_SENTINELS_ENV} is set but lists no Sentinel: ${JSON.stringify(list)}`);
  const refuse = (what: string): never => {
    throw new Error(`${what} is not possible on a Redis from ${REDIS_SENTINELS_ENV} (${list}); unset it to let the test start its own`);
  };
  return {
    name,
    sentinels,
    dataPorts: [],
    managed: false,
    primary: () => askPrimary(sentinels, name),
    kill: async () => refuse("kill"),
    restart: async () => refuse("restart"),
    waitForFailover: async () => refuse("waitForFailover"),
    replicas: async () => refuse("replicas"),
    stop: async () => undefined,
  };
}

async function launchGroup(options: RedisSentinelOptions): Promise<RedisSentinelGroup> {
  refuseIfExternalOnly("Redis Sentinel group", REDIS_SENTINELS_ENV);
  const binary = ensureBinary("redis-server", "redis-server", REDIS_SENTINELS_ENV);
  const name = options.name ?? "prl";
  const dataPorts = options.dataPorts ? [...options.dataPorts] : await Promise.all([freePort(), freePort(), freePort()]);
  const sentinelPorts = options.sentinelPorts ? [...options.sentinelPorts] : await Promise.all([freePort(), freePort(), freePort()]);
  if (dataPorts.length !== 3 || sentinelPorts.length !== 3) throw new Error("startRedisSentinel: dataPorts and sentinelPorts must list 3 ports each");
  const timeoutMs = options.startTimeoutMs ?? 60_000;
  const dir = mkdtempSync(join(tmpdir(), "prl-redis-sentinel-"));
  const children = new Map<number, ServerChild>();
  const sentinels = sentinelPorts.map((port) => ({ host: "127.0.0.1", port }));

  const waitUp = async (child: ServerChild, port: number): Promise<void> => {
    try {
      await Promise.race([
        waitForPort(port, child.what, timeoutMs),
        child.exited.then(() => {
          throw new Error(`${child.what} exited during start-up: ${child.output() || "no output"}`);
        }),
      ]);
    } catch (error) {
      await child.kill();
      throw error;
    }
  };
  const startData = async (port: number, primaryPort: number | null): Promise<void> => {
    const args = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir, "--dbfilename", `dump-${port}.rdb`, "--loglevel", "warning"];
    if (primaryPort !== null) args.push("--replicaof", "127.0.0.1", String(primaryPort));
    const child = spawnChild(`redis-server :${port} (${primaryPort === null ? "primary" : "replica"})`, binary, args);
    children.set(port, child);
    await waitUp(child, port);
  };
  const startSentinel = async (port: number): Promise<void> => {
    // Sentinel rewrites its config file (what it learns about replicas and peers), so each gets its own.
    const conf = join(dir, `sentinel-${port}.conf`);
    writeFileSync(
      conf,
      [
        `port ${port}`,
        "bind 127.0.0.1",
        `dir ${dir}`,
        `sentinel monitor ${name} 127.0.0.1 ${dataPorts[0]} 2`,
        `sentinel down-after-milliseconds ${name} ${options.downAfterMs ?? 1000}`,
        `sentinel failover-timeout ${name} ${options.failoverTimeoutMs ?? 3000}`,
        `sentinel parallel-syncs ${name} 1`,
        "loglevel warning",
        "",
      ].join("\n"),
    );
    const child = spawnChild(`redis-sentinel :${port}`, binary, [conf, "--sentinel"]);
    children.set(port, child);
    await waitUp(child, port);
  };
  const stopAll = async () => {
    await Promise.all([...children.values()].map((c) => c.stop()));
    rmSync(dir, { recursive: true, force: true });
  };
  const childOf = (port: number): ServerChild => {
    const child = children.get(port);
    if (!child || !dataPorts.includes(port)) throw new Error(`no Redis data node on port ${port} (data nodes: ${dataPorts.join(", ")})`);
    return child;
  };

  try {
    await startData(dataPorts[0]!, null);
    await Promise.all(dataPorts.slice(1).map((p) => startData(p, dataPorts[0]!)));
    await Promise.all(sentinelPorts.map(startSentinel));
    await pollUntil("every Sentinel seeing the primary, both replicas in sync and the other Sentinels", timeoutMs, async () => {
      for (const s of sentinelPorts) {
        const master = (await redisCommand(s, ["SENTINEL", "master", name])) as string[];
        const fields: Record<string, string> = {};
        for (let i = 0; i + 1 < master.length; i += 2) fields[master[i]!] = master[i + 1]!;
        if (fields["num-slaves"] !== "2" || fields["num-other-sentinels"] !== "2") {
          throw new Error(`Sentinel ${s}: ${fields["num-slaves"]} replicas, ${fields["num-other-sentinels"]} other Sentinels`);
        }
      }
      for (const p of dataPorts.slice(1)) {
        const info = parseInfo(await redisCommand(p, ["INFO", "replication"]));
        if (info.master_link_status !== "up") throw new Error(`replica ${p}: master_link_status:${info.master_link_status}`);
      }
      return true;
    });
  } catch (error) {
    const outputs = [...children.values()].map((c) => `${c.what}: ${c.output() || "no output"}`).join("\n");
    await stopAll();
    throw new Error(`${(error as Error).message}\n${outputs}`, { cause: error });
  }

  return {
    name,
    sentinels,
    dataPorts,
    managed: true,
    primary: () => askPrimary(sentinels, name),
    kill: (port) => childOf(port).kill(),
    async restart(port) {
      await childOf(port).kill();
      const primary = await askPrimary(sentinels, name);
      await startData(port, primary === port ? null : primary);
    },
    waitForFailover: (formerPort, ms = 30_000) =>
      pollUntil(`a Sentinel failover away from the primary on ${formerPort}`, ms, async () => {
        const port = await askPrimary(sentinels, name);
        if (port === formerPort) throw new Error(`the Sentinels still name ${formerPort}`);
        const info = parseInfo(await redisCommand(port, ["INFO", "replication"]));
        if (info.role !== "master") throw new Error(`the Sentinels name ${port}, which still reports role:${info.role}`);
        return port;
      }, 50),
    async replicas() {
      const roles = await Promise.all(
        dataPorts.map(async (port) => (children.get(port)?.alive ? parseInfo(await redisCommand(port, ["INFO", "replication"])).role : undefined)),
      );
      return dataPorts.filter((_, i) => roles[i] === "slave");
    },
    stop: stopAll,
  };
}
