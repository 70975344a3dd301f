import type { LeaseBackend } from "../../src/contract/lease-backend.js";

// No jest imports here: worker processes and benchmarks build their backends with this module.

/**
 * BackendSpec names a real lease backend by plain, JSON-serialisable data, so a parent can tell a
 * child process which backend to build. Each kind's client is created the way its backend's TSDoc
 * asks: no offline queue, small timeouts and retries, so a dead server fails calls instead of
 * queueing them.
 */
export type BackendSpec =
  | { readonly kind: "redis"; readonly url: string; readonly keyPrefix?: string }
  | {
      readonly kind: "redis-cluster";
      /** Startup nodes; the client learns the rest from the cluster. */
      readonly nodes: readonly { readonly host: string; readonly port: number }[];
      readonly keyPrefix?: string;
      /** Announced `host:port` → where to connect instead (a TcpProxy in front of each node). */
      readonly natMap?: Readonly<Record<string, { readonly host: string; readonly port: number }>>;
    }
  | {
      readonly kind: "redis-sentinel";
      readonly sentinels: readonly { readonly host: string; readonly port: number }[];
      /** The name the Sentinels monitor. */
      readonly name: string;
      readonly keyPrefix?: string;
    }
  | { readonly kind: "redlock"; readonly urls: readonly string[]; readonly keyPrefix?: string; readonly driftFactor?: number }
  | {
      readonly kind: "etcd";
      readonly endpoints: readonly string[];
      readonly prefix?: string;
      /**
       * With several endpoints: skip a member for this long (ms) after one recoverable failure (a
       * per-host circuit breaker; the global policy stays off). Default: none, the README's
       * `host: () => noop`, which keeps sending a share of the calls to a dead member.
       */
      readonly hostBreakerMs?: number;
    }
  | { readonly kind: "azure-blob"; readonly connectionString: string; readonly container: string; readonly prefix?: string }
  | { readonly kind: "zookeeper"; readonly connectString: string; readonly root?: string };

/** BuiltBackend is a backend with the clients made for it; `close()` closes both. */
export interface BuiltBackend {
  readonly backend: LeaseBackend;
  /** Closes the backend, then quits the clients it was built on. */
  close(): Promise<void>;
}

/** Per-command timeout of the clients, in ms: well under any TTL the tests use, far above a loopback round trip. */
const CLIENT_TIMEOUT_MS = 2_000;

/**
 * createBackend connects the clients a spec needs and builds its backend. Backend modules and
 * client packages are imported only for the kind asked for, so a worker pays only for its own.
 */
export async function createBackend(spec: BackendSpec): Promise<BuiltBackend> {
  switch (spec.kind) {
    case "redis": {
      const { RedisLeaseBackend } = await import("../../src/lease-backends/redis.js");
      const client = await connectRedis(spec.url);
      const backend = new RedisLeaseBackend({ client, ...(spec.keyPrefix === undefined ? {} : { keyPrefix: spec.keyPrefix }) });
      return { backend, close: async () => { await backend.close(); await quitRedis(client); } };
    }
    case "redis-cluster": {
      const [{ Cluster }, { RedisLeaseBackend }] = await Promise.all([import("ioredis"), import("../../src/lease-backends/redis.js")]);
      const client = new Cluster([...spec.nodes], clusterClientOptions(spec.natMap));
      await client.connect();
      const backend = new RedisLeaseBackend({ client, ...(spec.keyPrefix === undefined ? {} : { keyPrefix: spec.keyPrefix }) });
      return { backend, close: async () => { await backend.close(); await quitRedis(client); } };
    }
    case "redis-sentinel": {
      const [{ Redis }, { RedisLeaseBackend }] = await Promise.all([import("ioredis"), import("../../src/lease-backends/redis.js")]);
      const client = new Redis(sentinelClientOptions(spec.sentinels, spec.name));
      await client.connect();
      const backend = new RedisLeaseBackend({ client, ...(spec.keyPrefix === undefined ? {} : { keyPrefix: spec.keyPrefix }) });
      return { backend, close: async () => { await backend.close(); await quitRedis(client); } };
    }
    case "redlock": {
      const { RedlockLeaseBackend } = await import("../../src/lease-backends/redlock.js");
      const clients = await Promise.all(spec.urls.map(connectRedis));
      const backend = new RedlockLeaseBackend({
        clients,
        ...(spec.keyPrefix === undefined ? {} : { keyPrefix: spec.keyPrefix }),
        ...(spec.driftFactor === undefined ? {} : { driftFactor: spec.driftFactor }),
      });
      return { backend, close: async () => { await backend.close(); await Promise.all(clients.map(quitRedis)); } };
    }
    case "etcd": {
      const [{ Etcd3, isRecoverableError }, { noop, circuitBreaker, handleWhen, ConsecutiveBreaker }, { EtcdLeaseBackend }] = await Promise.all([
        import("etcd3"),
        import("cockatiel"),
        import("../../src/lease-backends/etcd.js"),
      ]);
      // No retries and no global circuit breaker: with etcd3's defaults a dead server's calls are
      // retried and then refused for 5 s after it is back (see EtcdLeaseBackendOptions.client).
      const breakMs = spec.hostBreakerMs;
      const host =
        breakMs === undefined
          ? () => noop
          : () => circuitBreaker(handleWhen(isRecoverableError), { halfOpenAfter: breakMs, breaker: new ConsecutiveBreaker(1) });
      const client = new Etcd3({ hosts: [...spec.endpoints], faultHandling: { host, global: noop } });
      const backend = new EtcdLeaseBackend({ client, ...(spec.prefix === undefined ? {} : { prefix: spec.prefix }) });
      return { backend, close: async () => { await backend.close(); client.close(); } };
    }
    case "zookeeper": {
      // The backend opens (and replaces) its own sessions: nothing to connect here.
      const { ZooKeeperLeaseBackend } = await import("../../src/lease-backends/zookeeper.js");
      const backend = new ZooKeeperLeaseBackend({ connectString: spec.connectString, ...(spec.root === undefined ? {} : { root: spec.root }) });
      return { backend, close: () => backend.close() };
    }
    case "azure-blob": {
      const [{ BlobServiceClient }, { AzureBlobLeaseBackend }] = await Promise.all([
        import("@azure/storage-blob"),
        import("../../src/lease-backends/azure-blob.js"),
      ]);
      // One try per request: the SDK's default retries take about 16 s to give up on a dead server.
      const service = BlobServiceClient.fromConnectionString(spec.connectionString, {
        retryOptions: { maxTries: 1, tryTimeoutInMs: 5_000 },
      });
      const backend = new AzureBlobLeaseBackend({
        containerClient: service.getContainerClient(spec.container),
        ...(spec.prefix === undefined ? {} : { prefix: spec.prefix }),
      });
      return { backend, close: () => backend.close() };
    }
  }
}

/**
 * ioredis `Cluster` options for a lease backend (the README's "Redis Cluster" advice):
 * - `enableOfflineQueue: false` on the cluster and on every node: while the client reconnects or
 *   refreshes its slot map during a failover, commands fail at once instead of queueing and running
 *   seconds later, after the caller's timeout (a late grant nobody uses).
 * - `scaleReads: "master"`: replicas lag (replication is asynchronous); a lease read answered by a
 *   replica could show a lease as free or still held. It is ioredis's default; never set it to
 *   "slave" or "all" for lease keys.
 * - few, short redirections and retries (`maxRedirections: 3`, `retryDelayOnFailover` /
 *   `retryDelayOnClusterDown` / `retryDelayOnTryAgain` 100 ms, `maxRetriesPerRequest: 1`): a call
 *   should fail within its timeout and let the limiter retry on its own schedule.
 * - `slotsRefreshTimeout` 1,000 ms and `commandTimeout` 2,000 ms bound a stalled node.
 */
export function clusterClientOptions(natMap?: Readonly<Record<string, { readonly host: string; readonly port: number }>>) {
  return {
    enableOfflineQueue: false,
    scaleReads: "master" as const,
    maxRedirections: 3,
    retryDelayOnFailover: 100,
    retryDelayOnClusterDown: 100,
    retryDelayOnTryAgain: 100,
    slotsRefreshTimeout: 1000,
    clusterRetryStrategy: (times: number) => Math.min(100 * times, 1000),
    lazyConnect: true,
    ...(natMap ? { natMap: { ...natMap } } : {}),
    redisOptions: {
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      commandTimeout: CLIENT_TIMEOUT_MS,
      connectTimeout: CLIENT_TIMEOUT_MS,
    },
  };
}

/**
 * ioredis options for a Sentinel-managed primary: no offline queue, bounded retries and command
 * time (as for a single Redis), Sentinels retried every 100 ms up to 1 s, and `failoverDetector`
 * so the client follows `+switch-master` at once instead of on its next reconnect.
 */
export function sentinelClientOptions(sentinels: readonly { readonly host: string; readonly port: number }[], name: string) {
  return {
    sentinels: sentinels.map((s) => ({ host: s.host, port: s.port })),
    name,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    commandTimeout: CLIENT_TIMEOUT_MS,
    connectTimeout: CLIENT_TIMEOUT_MS,
    sentinelRetryStrategy: (times: number) => Math.min(100 * times, 1000),
    failoverDetector: true,
    lazyConnect: true,
  };
}

async function connectRedis(url: string) {
  const { Redis } = await import("ioredis");
  const client = new Redis(url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    commandTimeout: CLIENT_TIMEOUT_MS,
    connectTimeout: CLIENT_TIMEOUT_MS,
    lazyConnect: true,
  });
  await client.connect();
  return client;
}

async function quitRedis(client: { quit(): Promise<unknown>; disconnect(): void }): Promise<void> {
  try {
    await client.quit();
  } catch {
    // Gone already, or unreachable: disconnect below.
  }
  // Also after a clean QUIT: with `failoverDetector`, ioredis's quit() leaves the detector's
  // Sentinel connections open, and they reconnect for ever once the Sentinels are gone.
  client.disconnect();
}
