/**
 * The external-servers path of docker-compose.yml, proved without a Docker engine:
 *
 * 1. starts the servers the compose file names as local processes on 127.0.0.1, on the host ports
 *    its `ports:` entries publish (Redis 16379, Redlock 16380-16382, Redis Cluster 17001-17006,
 *    Sentinel data 16390-16392 and Sentinels 26390-26392, etcd 12379, etcd cluster 12381/12383/12385,
 *    Azurite 11000-11002, ZooKeeper 12181; RabbitMQ is the machine's own on 5672, started with
 *    `rabbitmq-server -detached` if it is down and we are root, or AMQP_URL if set);
 * 2. exports the variables of the compose `tests` service, pointing at them;
 * 3. runs the tests that honour those variables (every conformance runner of a real backend, and
 *    one integration test per backend plus the queue consumers), with PRL_EXTERNAL_ONLY=1 so that a
 *    test which would start a server of its own fails instead of silently testing something else;
 * 4. checks that every server was really used (its command count, revision or zxid moved);
 * 5. stops everything, also on failure.
 *
 * `node --import tsx scripts/test-external-servers.ts` runs it all (about 4 minutes on 2 cores);
 * .ci/run adds `--quick` (see QUICK_SYSTEM_TESTS).
 */
import { spawn } from "node:child_process";
import { createServer, connect } from "node:net";
import { BlobServiceClient } from "@azure/storage-blob";
import { launchAzurite, type AzuriteServer } from "../test/support/servers/azurite.js";
import { launchEtcd, type EtcdServer } from "../test/support/servers/etcd.js";
import { memberStatus, startEtcdCluster, type EtcdCluster } from "../test/support/servers/etcd-cluster.js";
import { launchRedis, type RedisServer } from "../test/support/servers/redis.js";
import { parseInfo, redisCommand } from "../test/support/servers/redis-admin.js";
import { startRedisCluster, type RedisCluster } from "../test/support/servers/redis-cluster.js";
import { startRedisSentinel, type RedisSentinelGroup } from "../test/support/servers/redis-sentinel.js";
import { startZooKeeper, type ZooKeeperServer } from "../test/support/servers/zookeeper.js";

/** The host ports of docker-compose.yml (keep the two in step). */
const PORTS = {
  redis: 16379,
  redlock: [16380, 16381, 16382],
  cluster: [17001, 17002, 17003, 17004, 17005, 17006],
  clusterBus: [27001, 27002, 27003, 27004, 27005, 27006],
  sentinelData: [16390, 16391, 16392],
  sentinels: [26390, 26391, 26392],
  etcd: { client: 12379, peer: 12380 },
  etcdCluster: { client: [12381, 12383, 12385], peer: [12382, 12384, 12386] },
  azurite: { blob: 11000, queue: 11001, table: 11002 },
  zookeeper: 12181,
};

/** Every variable a server module reads; cleared first, so the launchers below start local processes. */
const SERVER_VARIABLES = [
  "REDIS_URL",
  "REDLOCK_URLS",
  "REDIS_CLUSTER_NODES",
  "REDIS_SENTINELS",
  "REDIS_SENTINEL_NAME",
  "ETCD_ENDPOINTS",
  "ETCD_CLUSTER_ENDPOINTS",
  "AZURE_STORAGE_CONNECTION_STRING",
  "ZOOKEEPER_CONNECT",
  "PRL_EXTERNAL_ONLY",
];

/** Tests of the unit project (run 2 at a time) that honour the variables. */
const UNIT_TESTS = [
  "test/conformance/redis.test.ts",
  "test/conformance/redis-cluster.test.ts",
  "test/conformance/redlock.test.ts",
  "test/conformance/etcd.test.ts",
  "test/conformance/etcd-cluster.test.ts",
  "test/conformance/azure-blob.test.ts",
  "test/conformance/zookeeper.test.ts",
];
/** Tests of the system project (run one at a time): one integration test per backend, the consumers, the ZooKeeper client facts. */
const SYSTEM_TESTS = [
  "test/integration/redis.integration.test.ts",
  "test/integration/redis-cluster.integration.test.ts",
  "test/integration/redis-sentinel.integration.test.ts",
  "test/integration/redlock.integration.test.ts",
  "test/integration/etcd.integration.test.ts",
  "test/integration/etcd-cluster.integration.test.ts",
  "test/integration/azure-blob.integration.test.ts",
  "test/integration/consumers.test.ts",
  "test/integration/zookeeper-client.test.ts",
  "test/integration/zookeeper.integration.test.ts",
];
/**
 * `--quick` (what .ci/run uses, to stay within its time budget): every conformance runner above,
 * and of the system tests only those that use a server no conformance runner does (Sentinel,
 * RabbitMQ) plus the ZooKeeper client facts. `npm test` has already run the rest on servers of
 * its own; what this step proves is that each variable reaches the server it names.
 */
const QUICK_SYSTEM_TESTS = [
  "test/integration/redis-sentinel.integration.test.ts",
  "test/integration/consumers.test.ts",
  "test/integration/zookeeper-client.test.ts",
];
const quick = process.argv.includes("--quick");

const log = (line: string) => process.stdout.write(`[external-servers] ${line}\n`);

async function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

async function reachable(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** The machine's RabbitMQ (or AMQP_URL's): started with `rabbitmq-server -detached` when down and we are root. */
async function ensureRabbit(url: string): Promise<void> {
  const { hostname, port } = new URL(url);
  const p = Number(port || 5672);
  if (await reachable(hostname, p)) return;
  if (process.getuid?.() !== 0 || process.env.AMQP_URL) throw new Error(`RabbitMQ is not reachable at ${url}: start it (rabbitmq-server -detached) or set AMQP_URL`);
  log("RabbitMQ is down: rabbitmq-server -detached");
  spawn("rabbitmq-server", ["-detached"], { stdio: "ignore" }).on("error", () => undefined);
  const deadline = Date.now() + 60_000;
  while (!(await reachable(hostname, p))) {
    if (Date.now() > deadline) throw new Error(`RabbitMQ did not come up at ${url} within 60 s after rabbitmq-server -detached`);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

/** Runs jest; `--forceExit` so that a handle a failed test left open cannot hang CI (it did, 5400 s). */
function runJest(args: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["node_modules/jest/bin/jest.js", "--forceExit", ...args], { stdio: "inherit", env });
    child.once("exit", (code, signal) => resolve(code ?? (signal ? 1 : 0)));
  });
}

interface Servers {
  redis: RedisServer;
  redlock: RedisServer[];
  cluster: RedisCluster;
  sentinel: RedisSentinelGroup;
  etcd: EtcdServer;
  etcdCluster: EtcdCluster;
  azurite: AzuriteServer;
  zookeeper: ZooKeeperServer;
}

/** What each server has done so far: command counts, revisions, zxids. */
async function usage(s: Servers): Promise<Record<string, number>> {
  const commands = async (ports: readonly number[]) => {
    let sum = 0;
    for (const port of ports) sum += Number(parseInfo(await redisCommand(port, ["INFO", "stats"])).total_commands_processed ?? 0);
    return sum;
  };
  const blob = BlobServiceClient.fromConnectionString(s.azurite.connectionString, { retryOptions: { maxTries: 1 } });
  let containers = 0;
  for await (const _ of blob.listContainers()) containers++;
  const zxid = /Zxid: (0x[0-9a-f]+)/i.exec(await s.zookeeper.fourLetter("srvr"))?.[1] ?? "0x0";
  return {
    "Redis (REDIS_URL) commands": await commands([PORTS.redis]),
    "Redlock servers (REDLOCK_URLS) commands": await commands(PORTS.redlock),
    "Redis Cluster (REDIS_CLUSTER_NODES) commands": await commands(PORTS.cluster),
    "Sentinel data nodes (REDIS_SENTINELS) commands": await commands(PORTS.sentinelData),
    "etcd (ETCD_ENDPOINTS) revision": (await memberStatus(s.etcd.endpoint)).revision,
    "etcd cluster (ETCD_CLUSTER_ENDPOINTS) revision": (await memberStatus(s.etcdCluster.endpoints[0]!)).revision,
    "Azurite (AZURE_STORAGE_CONNECTION_STRING) containers": containers,
    "ZooKeeper (ZOOKEEPER_CONNECT) zxid": Number(BigInt(zxid)),
  };
}

async function main(): Promise<number> {
  for (const name of SERVER_VARIABLES) delete process.env[name];
  const wanted: [string, number][] = [
    ["Redis", PORTS.redis],
    ...PORTS.redlock.map((p) => ["Redlock", p] as [string, number]),
    ...PORTS.cluster.map((p) => ["Redis Cluster", p] as [string, number]),
    ...PORTS.clusterBus.map((p) => ["Redis Cluster bus", p] as [string, number]),
    ...PORTS.sentinelData.map((p) => ["Sentinel data node", p] as [string, number]),
    ...PORTS.sentinels.map((p) => ["Sentinel", p] as [string, number]),
    ["etcd", PORTS.etcd.client],
    ["etcd peer", PORTS.etcd.peer],
    ...PORTS.etcdCluster.client.map((p) => ["etcd cluster", p] as [string, number]),
    ...PORTS.etcdCluster.peer.map((p) => ["etcd cluster peer", p] as [string, number]),
    ["Azurite", PORTS.azurite.blob],
    ["Azurite", PORTS.azurite.queue],
    ["Azurite", PORTS.azurite.table],
    ["ZooKeeper", PORTS.zookeeper],
  ];
  const busy: string[] = [];
  for (const [what, port] of wanted) if (!(await portFree(port))) busy.push(`${port} (${what})`);
  if (busy.length) throw new Error(`ports of docker-compose.yml already in use on 127.0.0.1: ${busy.join(", ")}; stop what holds them (another run of this script, or docker-compose up)`);

  const amqpUrl = process.env.AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672";
  const started = Date.now();
  log("starting the servers of docker-compose.yml as local processes");
  const stops: (() => Promise<void>)[] = [];
  const keep = <T extends { stop(): Promise<void> }>(server: T): T => {
    stops.push(() => server.stop());
    return server;
  };
  let code = 1;
  try {
    // The cluster first and alone: its nodes must agree on one config while the machine is quiet
    // (redis-cli waits for that, and 25 servers starting at once can starve the gossip).
    const cluster = keep(await startRedisCluster({ ports: PORTS.cluster, busPorts: PORTS.clusterBus }));
    const [redis, redlock, sentinel, etcd, etcdCluster, azurite, zookeeper] = await Promise.all([
      launchRedis({ port: PORTS.redis }).then(keep),
      Promise.all(PORTS.redlock.map((port) => launchRedis({ port }).then(keep))),
      startRedisSentinel({ dataPorts: PORTS.sentinelData, sentinelPorts: PORTS.sentinels }).then(keep),
      launchEtcd({ clientPort: PORTS.etcd.client, peerPort: PORTS.etcd.peer }).then(keep),
      startEtcdCluster({ clientPorts: PORTS.etcdCluster.client, peerPorts: PORTS.etcdCluster.peer }).then(keep),
      launchAzurite({ blobPort: PORTS.azurite.blob, queuePort: PORTS.azurite.queue, tablePort: PORTS.azurite.table }).then(keep),
      startZooKeeper({ port: PORTS.zookeeper }).then(keep),
      ensureRabbit(amqpUrl),
    ]);
    const servers: Servers = { redis, redlock, cluster, sentinel, etcd, etcdCluster, azurite, zookeeper };
    log(`servers up in ${((Date.now() - started) / 1000).toFixed(1)} s`);

    // The `tests` service's variables, with 127.0.0.1 and the published ports.
    const variables: Record<string, string> = {
      REDIS_URL: redis.url,
      REDLOCK_URLS: redlock.map((s) => s.url).join(","),
      REDIS_CLUSTER_NODES: cluster.nodes.map((n) => `${n.host}:${n.port}`).join(","),
      REDIS_SENTINELS: sentinel.sentinels.map((s) => `${s.host}:${s.port}`).join(","),
      REDIS_SENTINEL_NAME: sentinel.name,
      ETCD_ENDPOINTS: etcd.endpoint,
      ETCD_CLUSTER_ENDPOINTS: etcdCluster.endpoints.join(","),
      AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString,
      AMQP_URL: amqpUrl,
      ZOOKEEPER_CONNECT: zookeeper.connectString,
    };
    for (const [k, v] of Object.entries(variables)) log(`${k}=${k === "AZURE_STORAGE_CONNECTION_STRING" ? v.replace(/AccountKey=[^;]+/, "AccountKey=…") : v}`);
    const env = { ...process.env, ...variables, PRL_EXTERNAL_ONLY: "1" };
    const before = await usage(servers);

    log(`unit project: ${UNIT_TESTS.join(" ")}`);
    const unit = await runJest(["--selectProjects", "unit", "--maxWorkers=2", ...UNIT_TESTS], env);
    const systemTests = quick ? QUICK_SYSTEM_TESTS : SYSTEM_TESTS;
    log(`system project: ${systemTests.join(" ")}`);
    const system = await runJest(["--selectProjects", "system", "--maxWorkers=1", ...systemTests], env);

    // A test that quietly used a server of its own would leave one of these untouched.
    const after = await usage(servers);
    // Our own INFO calls count as commands too: ask for more than a handful.
    const unused = Object.keys(after).filter((k) => !(after[k]! - before[k]! >= (k.endsWith("commands") ? 20 : 1)));
    for (const k of Object.keys(after)) log(`${k}: ${before[k]} -> ${after[k]}`);
    if (unused.length) log(`NOT USED by the tests although its variable was set: ${unused.join("; ")}`);
    code = unit !== 0 || system !== 0 || unused.length ? 1 : 0;
  } finally {
    await Promise.allSettled(stops.map((stop) => stop()));
    log(`done in ${((Date.now() - started) / 1000).toFixed(0)} s`);
  }
  return code;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`[external-servers] ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);
