import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensureBinary } from "../binaries.js";
import { freePort, waitForPort } from "../net.js";
import { pollUntil, refuseIfExternalOnly, spawnChild, type ServerChild } from "./child.js";
import { parseInfo, redisCommand } from "./redis-admin.js";

// No jest imports here: scripts/test-external-servers.ts starts a cluster with this module too.

/** One node as `CLUSTER NODES` on a live node describes it. */
export interface ClusterNodeInfo {
  readonly id: string;
  /** `host:port` as the node announces itself (what clients are redirected to). */
  readonly address: string;
  readonly host: string;
  readonly port: number;
  readonly role: "primary" | "replica";
  /** The id of the primary a replica follows; null for a primary. */
  readonly primaryId: string | null;
  /** Slot ranges `[from, to]` (inclusive) a primary serves. */
  readonly slots: readonly (readonly [number, number])[];
  /** Flagged `fail` or `pfail` by the node asked. */
  readonly failing: boolean;
}

/** A Redis Cluster for tests: its nodes and fault controls. */
export interface RedisCluster {
  /** `host:port` of every node, the startup nodes of an ioredis `Cluster`. */
  readonly nodes: readonly { readonly host: string; readonly port: number }[];
  /** Whether this module started the processes (false: `REDIS_CLUSTER_NODES` was used). */
  readonly managed: boolean;
  /** The cluster's view of its nodes, asked of the first node that answers. */
  topology(): Promise<ClusterNodeInfo[]>;
  /** The slot of `key` (`CLUSTER KEYSLOT`: a `{hash tag}` decides it). */
  slotOf(key: string): Promise<number>;
  /** The port of the live primary serving `key`'s slot. */
  primaryFor(key: string): Promise<number>;
  /** SIGKILLs the node on `port`, as a crash; it stays down until {@link restart}. */
  kill(port: number): Promise<void>;
  /** Freezes the node on `port` (SIGSTOP). */
  pause(port: number): void;
  /** Thaws it (SIGCONT). */
  resume(port: number): void;
  /**
   * Starts the node on `port` again with its cluster config file (same id, same epoch); without
   * persistence it comes back empty and rejoins as a replica of whoever took over its slots.
   */
  restart(port: number): Promise<void>;
  /**
   * Waits until a node other than `formerPort` serves `key`'s slot as a primary and every live
   * node reports `cluster_state:ok`; resolves its port. Rejects after `timeoutMs`.
   */
  waitForPromotion(key: string, formerPort: number, timeoutMs?: number): Promise<number>;
  /** Waits until every live node reports `cluster_state:ok` and every replica's link is up. */
  waitHealthy(timeoutMs?: number): Promise<void>;
  /** Stops every node and removes the data dir (a no-op for `REDIS_CLUSTER_NODES`). */
  stop(): Promise<void>;
}

/** Options of {@link startRedisCluster}. */
export interface RedisClusterOptions {
  /**
   * Client ports of the six nodes (the first three become primaries). Default: free ports. The
   * cluster bus of a node listens on a port of its own (`--cluster-port`), also free unless
   * `busPorts` names them.
   */
  readonly ports?: readonly number[];
  readonly busPorts?: readonly number[];
  /**
   * `cluster-node-timeout`, in ms: how long a primary may be unreachable before its replica takes
   * over. Default 1,000 (Redis's default is 15,000), so a failover takes about two seconds.
   */
  readonly nodeTimeoutMs?: number;
  /** How long start-up may take, in ms. Default 60,000. */
  readonly startTimeoutMs?: number;
}

/** The environment variable naming an external cluster: comma-separated `host:port` of its nodes. */
export const REDIS_CLUSTER_ENV = "REDIS_CLUSTER_NODES";

/**
 * startRedisCluster starts a Redis Cluster for a test: the one named by `REDIS_CLUSTER_NODES` if
 * set (fault controls then throw), else six `redis-server --cluster-enabled yes` processes on
 * 127.0.0.1 (three primaries, three replicas, made by `redis-cli --cluster create
 * --cluster-replicas 1`), without persistence, and waits until every node reports
 * `cluster_state:ok` and every replica is in sync. Installs Debian `redis-server` / `redis-tools`
 * when running as root without them. Rejects with a clear message, never hangs.
 */
export async function startRedisCluster(options: RedisClusterOptions = {}): Promise<RedisCluster> {
  const external = process.env[REDIS_CLUSTER_ENV];
  if (external) return externalCluster(external);
  return launchCluster(options);
}

function parseNodes(text: string): ClusterNodeInfo[] {
  const nodes: ClusterNodeInfo[] = [];
  for (const line of text.split("\n")) {
    const parts = line.trim().split(" ");
    if (parts.length < 8) continue;
    const [id, address, flags, primary] = parts as [string, string, string, string];
    const hostPort = address.split("@")[0]!.split(",")[0]!;
    const host = hostPort.slice(0, hostPort.lastIndexOf(":"));
    const port = Number(hostPort.slice(hostPort.lastIndexOf(":") + 1));
    const flagList = flags.split(",");
    const slots: [number, number][] = [];
    for (const range of parts.slice(8)) {
      if (range.startsWith("[")) continue; // a slot being migrated
      const [from, to] = range.split("-").map(Number) as [number, number | undefined];
      slots.push([from, to ?? from]);
    }
    nodes.push({
      id,
      address: `${host}:${port}`,
      host,
      port,
      role: flagList.includes("master") ? "primary" : "replica",
      primaryId: primary === "-" ? null : primary,
      slots,
      failing: flagList.includes("fail") || flagList.includes("fail?"),
    });
  }
  return nodes;
}

/** Controls shared by the managed and the external cluster: everything that only asks. */
interface Endpoint {
  readonly host: string;
  readonly port: number;
}

function queries(endpoints: () => readonly Endpoint[]) {
  const ask = async (args: readonly (string | number)[]): Promise<unknown> => {
    let last: unknown = new Error("no node to ask");
    for (const node of endpoints()) {
      try {
        return await redisCommand(node.port, args, 1500, node.host);
      } catch (error) {
        last = error;
      }
    }
    throw last;
  };
  const topology = async (): Promise<ClusterNodeInfo[]> => parseNodes(String(await ask(["CLUSTER", "NODES"])));
  const slotOf = async (key: string): Promise<number> => Number(await ask(["CLUSTER", "KEYSLOT", key]));
  const servesSlot = (node: ClusterNodeInfo, slot: number) => node.slots.some(([from, to]) => slot >= from && slot <= to);
  const primaryFor = async (key: string): Promise<number> => {
    const slot = await slotOf(key);
    const owner = (await topology()).find((n) => n.role === "primary" && !n.failing && servesSlot(n, slot));
    if (!owner) throw new Error(`no live primary serves slot ${slot} (key ${key})`);
    return owner.port;
  };
  /** Every live node says cluster_state:ok; every replica's link to its primary is up. */
  const healthy = async (): Promise<true | undefined> => {
    for (const { host, port } of endpoints()) {
      const info = parseInfo(await redisCommand(port, ["CLUSTER", "INFO"], 1500, host));
      if (info.cluster_state !== "ok") throw new Error(`node ${host}:${port}: cluster_state:${info.cluster_state}`);
      const replication = parseInfo(await redisCommand(port, ["INFO", "replication"], 1500, host));
      if (replication.role === "slave" && replication.master_link_status !== "up") {
        throw new Error(`replica ${host}:${port}: master_link_status:${replication.master_link_status}`);
      }
    }
    return true;
  };
  const waitForPromotion = async (key: string, formerPort: number, timeoutMs = 30_000): Promise<number> => {
    const slot = await slotOf(key);
    return pollUntil(`a replica taking over slot ${slot} from the primary on ${formerPort}`, timeoutMs, async () => {
      for (const { host, port } of endpoints()) {
        if (port === formerPort) continue;
        let mine: ClusterNodeInfo | undefined;
        try {
          mine = parseNodes(String(await redisCommand(port, ["CLUSTER", "NODES"], 1500, host))).find((n) => n.port === port);
        } catch {
          continue;
        }
        if (mine?.role === "primary" && servesSlot(mine, slot)) {
          for (const other of endpoints()) {
            if (other.port === formerPort) continue;
            const info = parseInfo(await redisCommand(other.port, ["CLUSTER", "INFO"], 1500, other.host));
            if (info.cluster_state !== "ok") throw new Error(`node ${other.port}: cluster_state:${info.cluster_state}`);
          }
          return port;
        }
      }
      throw new Error(`no other node serves slot ${slot} as a primary yet`);
    }, 50);
  };
  return { ask, topology, slotOf, primaryFor, healthy, waitForPromotion };
}

function externalCluster(list: string): RedisCluster {
  const nodes = list
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => {
      const url = new URL(s.includes("://") ? s : `redis://${s}`);
      return { host: url.hostname, port: Number(url.port || 6379) };
    });
  if (nodes.length === 0) throw new Error(`${REDIS_CLUSTER_ENV} is set but lists no node: ${JSON.stringify(list)}`);
  const q = queries(() => nodes);
  const refuse = (what: string) => {
    throw new Error(`${what} is not possible on a cluster from ${REDIS_CLUSTER_ENV} (${list}); unset it to let the test start its own cluster`);
  };
  return {
    nodes,
    managed: false,
    topology: q.topology,
    slotOf: q.slotOf,
    primaryFor: q.primaryFor,
    kill: async () => refuse("kill"),
    pause: () => refuse("pause"),
    resume: () => refuse("resume"),
    restart: async () => refuse("restart"),
    waitForPromotion: async () => refuse("waitForPromotion"),
    waitHealthy: async () => undefined,
    stop: async () => undefined,
  };
}

async function launchCluster(options: RedisClusterOptions): Promise<RedisCluster> {
  refuseIfExternalOnly("Redis Cluster", REDIS_CLUSTER_ENV);
  const server = ensureBinary("redis-server", "redis-server", REDIS_CLUSTER_ENV);
  const cli = ensureBinary("redis-cli", "redis-tools", REDIS_CLUSTER_ENV);
  const ports = options.ports ? [...options.ports] : await Promise.all(Array.from({ length: 6 }, () => freePort()));
  const busPorts = options.busPorts ? [...options.busPorts] : await Promise.all(Array.from({ length: 6 }, () => freePort()));
  if (ports.length !== 6 || busPorts.length !== 6) throw new Error(`startRedisCluster: ports and busPorts must list 6 ports each, got ${ports.length} and ${busPorts.length}`);
  const timeoutMs = options.startTimeoutMs ?? 60_000;
  const nodeTimeoutMs = options.nodeTimeoutMs ?? 1000;
  const dir = mkdtempSync(join(tmpdir(), "prl-redis-cluster-"));
  const children = new Map<number, ServerChild>();

  const startNode = async (index: number): Promise<void> => {
    const port = ports[index]!;
    const child = spawnChild(`redis-server :${port} (cluster node)`, server, [
      "--port", String(port),
      "--bind", "127.0.0.1",
      "--cluster-enabled", "yes",
      "--cluster-port", String(busPorts[index]!),
      "--cluster-config-file", join(dir, `nodes-${port}.conf`),
      "--cluster-node-timeout", String(nodeTimeoutMs),
      // Any replica may take over, however long its link was down: tests kill primaries on purpose.
      "--cluster-replica-validity-factor", "0",
      "--dir", dir,
      "--dbfilename", `dump-${port}.rdb`,
      "--save", "",
      "--appendonly", "no",
      "--loglevel", "warning",
    ]);
    children.set(port, child);
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
  const q = queries(() => ports.filter((p) => children.get(p)?.alive).map((port) => ({ host: "127.0.0.1", port })));
  const childOf = (port: number): ServerChild => {
    const child = children.get(port);
    if (!child) throw new Error(`no cluster node on port ${port} (nodes: ${ports.join(", ")})`);
    return child;
  };
  const stopAll = async () => {
    await Promise.all([...children.values()].map((c) => c.stop()));
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    await Promise.all(ports.map((_, i) => startNode(i)));
    await new Promise<void>((resolve, reject) => {
      execFile(
        cli,
        ["--cluster", "create", ...ports.map((p) => `127.0.0.1:${p}`), "--cluster-replicas", "1", "--cluster-yes"],
        { timeout: timeoutMs },
        (error, stdout, stderr) => (error ? reject(new Error(`redis-cli --cluster create failed: ${error.message}\n${stdout}\n${stderr}`)) : resolve()),
      );
    });
    await pollUntil("the Redis Cluster reaching cluster_state:ok with every replica in sync", timeoutMs, q.healthy);
  } catch (error) {
    const outputs = [...children.values()].map((c) => `${c.what}: ${c.output() || "no output"}`).join("\n");
    await stopAll();
    throw new Error(`${(error as Error).message}\n${outputs}`, { cause: error });
  }

  return {
    nodes: ports.map((port) => ({ host: "127.0.0.1", port })),
    managed: true,
    topology: q.topology,
    slotOf: q.slotOf,
    primaryFor: q.primaryFor,
    kill: (port) => childOf(port).kill(),
    pause: (port) => void childOf(port).proc.kill("SIGSTOP"),
    resume: (port) => void childOf(port).proc.kill("SIGCONT"),
    async restart(port) {
      const index = ports.indexOf(port);
      if (index < 0) throw new Error(`no cluster node on port ${port} (nodes: ${ports.join(", ")})`);
      await childOf(port).kill();
      await startNode(index);
    },
    waitForPromotion: q.waitForPromotion,
    waitHealthy: (ms = 30_000) => pollUntil("the Redis Cluster reaching cluster_state:ok with every replica in sync", ms, q.healthy).then(() => undefined),
    stop: stopAll,
  };
}
