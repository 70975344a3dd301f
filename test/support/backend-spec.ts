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
  | { readonly kind: "redlock"; readonly urls: readonly string[]; readonly keyPrefix?: string; readonly driftFactor?: number }
  | { readonly kind: "etcd"; readonly endpoints: readonly string[]; readonly prefix?: string }
  | { readonly kind: "azure-blob"; readonly connectionString: string; readonly container: string; readonly prefix?: string };

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
      const [{ Etcd3 }, { noop }, { EtcdLeaseBackend }] = await Promise.all([
        import("etcd3"),
        import("cockatiel"),
        import("../../src/lease-backends/etcd.js"),
      ]);
      // No retries and no circuit breaker: with etcd3's defaults a dead server's calls are retried
      // and then refused for 5 s after it is back (see EtcdLeaseBackendOptions.client).
      const client = new Etcd3({ hosts: [...spec.endpoints], faultHandling: { host: () => noop, global: noop } });
      const backend = new EtcdLeaseBackend({ client, ...(spec.prefix === undefined ? {} : { prefix: spec.prefix }) });
      return { backend, close: async () => { await backend.close(); client.close(); } };
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
    client.disconnect();
  }
}
