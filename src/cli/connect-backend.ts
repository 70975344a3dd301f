import type { LeaseBackend } from "../contract/lease-backend.js";
import type { BackendSpec } from "./backend-url.js";

/** A connected backend and how to let go of its clients. */
export interface ConnectedBackend {
  readonly backend: LeaseBackend;
  /** Closes the backend and every client opened for it. */
  close(): Promise<void>;
}

/** Options of {@link connectBackend}. */
export interface ConnectOptions {
  /** Bound of each connection attempt and command, in ms. Default 5000. */
  timeoutMs?: number;
  /** Key/blob prefix (default: each backend's own default). */
  prefix?: string;
  /**
   * Redis: reconnect after a dropped connection (default true, for long-running processes). A
   * one-shot command such as `status` passes false so a dead server fails at once.
   */
  reconnect?: boolean;
}

/**
 * connectBackend opens the clients a {@link BackendSpec} needs, configured as the backends'
 * docs ask (no offline queue, bounded commands, no long SDK retries), and wraps them in the
 * matching LeaseBackend. Client packages are imported on demand, since they are optional peers;
 * a missing one rejects with a message naming the package to install. Connecting is lazy where
 * the client allows: an unreachable server shows up as a failing (bounded) backend call.
 */
export async function connectBackend(spec: BackendSpec, options: ConnectOptions = {}): Promise<ConnectedBackend> {
  const timeoutMs = options.timeoutMs ?? 5000;
  switch (spec.kind) {
    case "redis": {
      const client = await redisClient(spec.url, timeoutMs, options.reconnect ?? true);
      const { RedisLeaseBackend } = await import("../lease-backends/redis.js");
      const backend = new RedisLeaseBackend({ client, ...(options.prefix === undefined ? {} : { keyPrefix: options.prefix }) });
      return { backend, close: async () => { await backend.close(); client.disconnect(); } };
    }
    case "redlock": {
      const clients = await Promise.all(spec.urls.map((u) => redisClient(u, timeoutMs, options.reconnect ?? true)));
      const { RedlockLeaseBackend } = await import("../lease-backends/redlock.js");
      const backend = new RedlockLeaseBackend({ clients, ...(options.prefix === undefined ? {} : { keyPrefix: options.prefix }) });
      return { backend, close: async () => { await backend.close(); for (const c of clients) c.disconnect(); } };
    }
    case "etcd": {
      const { Etcd3 } = await peer<typeof import("etcd3")>("etcd3");
      // Without cockatiel's no-op policies, etcd3 retries and opens a 5 s circuit breaker on failures.
      const policies = await import("cockatiel").catch(() => null);
      const client = new Etcd3({
        hosts: [...spec.hosts],
        dialTimeout: timeoutMs,
        ...(policies ? { faultHandling: { host: () => policies.noop, global: policies.noop } } : {}),
      });
      const { EtcdLeaseBackend } = await import("../lease-backends/etcd.js");
      const backend = new EtcdLeaseBackend({ client, ...(options.prefix === undefined ? {} : { prefix: options.prefix }) });
      return { backend, close: async () => { await backend.close(); client.close(); } };
    }
    case "azure-blob": {
      const { BlobServiceClient } = await peer<typeof import("@azure/storage-blob")>("@azure/storage-blob");
      const service = BlobServiceClient.fromConnectionString(spec.connectionString, {
        retryOptions: { maxTries: 1, tryTimeoutInMs: timeoutMs },
      });
      const { AzureBlobLeaseBackend } = await import("../lease-backends/azure-blob.js");
      const backend = new AzureBlobLeaseBackend({
        containerClient: service.getContainerClient(spec.container),
        ...(options.prefix === undefined ? {} : { prefix: options.prefix }),
      });
      return { backend, close: () => backend.close() };
    }
  }
}

async function redisClient(url: string, timeoutMs: number, reconnect: boolean) {
  const { Redis } = await peer<typeof import("ioredis")>("ioredis");
  const client = new Redis(url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    commandTimeout: timeoutMs,
    connectTimeout: timeoutMs,
    lazyConnect: true,
    // Without reconnecting, a status command against a dead server fails instead of retrying forever.
    retryStrategy: reconnect ? (attempt: number) => Math.min(attempt * 100, 1000) : () => null,
  });
  // Swallow the client's own error events: failures surface through the calls that need it.
  client.on("error", () => undefined);
  await client.connect().catch(() => undefined);
  return client;
}

async function peer<M>(name: string): Promise<M> {
  try {
    return (await import(name)) as M;
  } catch (error) {
    throw new Error(`this backend needs the package ${name} (npm install ${name}): ${(error as Error).message}`);
  }
}
