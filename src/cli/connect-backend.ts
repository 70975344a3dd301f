import { connect } from "node:net";
import type { LeaseBackend } from "../contract/lease-backend.js";
import { BackendUnreachableError } from "./backend-unreachable-error.js";
import { formatHost, type BackendSpec, type RedisServerSpec, type ServerAddress } from "./backend-url.js";

/** A connected backend and how to let go of its clients. */
export interface ConnectedBackend {
  readonly backend: LeaseBackend;
  /**
   * Servers found unreachable by `verify` that the backend can do without (a Redlock minority,
   * some of several etcd hosts), one line each, e.g. `redis 127.0.0.1:6380: connect ECONNREFUSED`.
   */
  readonly warnings: readonly string[];
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
  /**
   * Reach every server now (Redis: connect; etcd, Azure: open a TCP connection) and reject with a
   * BackendUnreachableError naming host, port and cause when the backend cannot work without the
   * ones that failed. Default false: connecting stays lazy, failures show up as backend calls.
   */
  verify?: boolean;
}

/**
 * connectBackend opens the clients a {@link BackendSpec} needs, configured as the backends'
 * docs ask (no offline queue, bounded commands, no long SDK retries), and wraps them in the
 * matching LeaseBackend. Client packages are imported on demand, since they are optional peers;
 * a missing one rejects with a message naming the package to install.
 */
export async function connectBackend(spec: BackendSpec, options: ConnectOptions = {}): Promise<ConnectedBackend> {
  const timeoutMs = options.timeoutMs ?? 5000;
  const reconnect = options.reconnect ?? true;
  const verify = options.verify ?? false;
  switch (spec.kind) {
    case "redis": {
      const { client, failure } = await redisClient(spec.server, timeoutMs, reconnect, verify);
      if (failure !== null) {
        closeRedis(client);
        throw failure;
      }
      const { RedisLeaseBackend } = await import("../lease-backends/redis.js");
      const backend = new RedisLeaseBackend({ client, ...(options.prefix === undefined ? {} : { keyPrefix: options.prefix }) });
      return { backend, warnings: [], close: async () => { await backend.close(); closeRedis(client); } };
    }
    case "redlock": {
      const opened = await Promise.all(spec.servers.map((s) => redisClient(s, timeoutMs, reconnect, verify)));
      const clients = opened.map((o) => o.client);
      const failures = opened.flatMap((o) => (o.failure === null ? [] : [o.failure]));
      // Redlock decides on a majority: it works while fewer than half the servers are down.
      if (failures.length > 0 && opened.length - failures.length < Math.floor(opened.length / 2) + 1) {
        for (const c of clients) closeRedis(c);
        throw BackendUnreachableError.ofServers("redlock", `${failures.length} of ${opened.length} servers unreachable, a majority is needed`, failures);
      }
      const { RedlockLeaseBackend } = await import("../lease-backends/redlock.js");
      const backend = new RedlockLeaseBackend({ clients, ...(options.prefix === undefined ? {} : { keyPrefix: options.prefix }) });
      return { backend, warnings: failures.map((f) => f.message), close: async () => { await backend.close(); for (const c of clients) closeRedis(c); } };
    }
    case "etcd": {
      const failures = verify ? await probeAll("etcd", spec.hosts, timeoutMs) : [];
      if (failures.length === spec.hosts.length && failures.length > 0) {
        throw failures.length === 1 ? failures[0]! : BackendUnreachableError.ofServers("etcd", `none of ${spec.hosts.length} hosts reachable`, failures);
      }
      const { Etcd3, isRecoverableError } = await peer<typeof import("etcd3")>("etcd3");
      // Without cockatiel's policies, etcd3 retries each call 3 times and opens a 5 s circuit
      // breaker after 3 failures. Here: no breaker; with several hosts, a failed call moves on to
      // the next host (each etcd3 retry picks another), so one dead member does not fail a call.
      const policies = await import("cockatiel").catch(() => null);
      const scheme = spec.tls ? "https" : "http";
      const client = new Etcd3({
        hosts: spec.hosts.map((h) => `${scheme}://${formatHost(h)}`),
        dialTimeout: timeoutMs,
        ...(spec.auth === undefined ? {} : { auth: { username: spec.auth.username, password: spec.auth.password } }),
        ...(policies
          ? {
              faultHandling: {
                host: () => policies.noop,
                global: spec.hosts.length > 1 ? policies.retry(policies.handleWhen(isRecoverableError), { maxAttempts: spec.hosts.length - 1 }) : policies.noop,
              },
            }
          : {}),
      });
      const { EtcdLeaseBackend } = await import("../lease-backends/etcd.js");
      const backend = new EtcdLeaseBackend({ client, ...(options.prefix === undefined ? {} : { prefix: options.prefix }) });
      return { backend, warnings: failures.map((f) => f.message), close: async () => { await backend.close(); client.close(); } };
    }
    case "azure-blob": {
      if (verify) {
        const [failure] = await probeAll("azure-blob", [spec.endpoint], timeoutMs);
        if (failure !== undefined) throw failure;
      }
      const { BlobServiceClient } = await peer<typeof import("@azure/storage-blob")>("@azure/storage-blob");
      const service = BlobServiceClient.fromConnectionString(spec.connectionString, {
        retryOptions: { maxTries: 1, tryTimeoutInMs: timeoutMs },
      });
      const { AzureBlobLeaseBackend } = await import("../lease-backends/azure-blob.js");
      const backend = new AzureBlobLeaseBackend({
        containerClient: service.getContainerClient(spec.container),
        ...(options.prefix === undefined ? {} : { prefix: options.prefix }),
      });
      return { backend, warnings: [], close: () => backend.close() };
    }
  }
}

async function redisClient(server: RedisServerSpec, timeoutMs: number, reconnect: boolean, verify: boolean) {
  const { Redis } = await peer<typeof import("ioredis")>("ioredis");
  const client = new Redis({
    host: server.host,
    port: server.port,
    ...(server.username === undefined ? {} : { username: server.username }),
    ...(server.password === undefined ? {} : { password: server.password }),
    ...(server.db === undefined ? {} : { db: server.db }),
    ...(server.tls ? { tls: { servername: server.host } } : {}),
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    commandTimeout: timeoutMs,
    connectTimeout: timeoutMs,
    lazyConnect: true,
    // Without reconnecting, a status command against a dead server fails instead of retrying forever.
    retryStrategy: reconnect ? (attempt: number) => Math.min(attempt * 100, 1000) : () => null,
    // Closing does not wait 2 s (the default) for a silent or unreachable server to close the socket:
    // a one-shot command, or a dashboard whose backend was unreachable at start, exits at once.
    disconnectTimeout: 100,
  });
  // connect() rejects with a bare "Connection is closed."; the error event has the real cause.
  let lastError: unknown = null;
  client.on("error", (error: unknown) => {
    lastError = error;
  });
  let failure: BackendUnreachableError | null = null;
  try {
    await client.connect();
  } catch (error) {
    if (verify) failure = new BackendUnreachableError(`redis ${formatHost(server)}`, lastError ?? error);
  }
  return { client, failure };
}

/**
 * Disconnects an ioredis client. One whose connection already failed and ended is left alone:
 * its disconnect() would start a 2 s timer (disconnectTimeout) waiting for a socket that closed
 * long ago, keeping a one-shot command's process alive for nothing.
 */
function closeRedis(client: { status: string; disconnect(): void }): void {
  if (client.status !== "end") client.disconnect();
}

/** Opens and closes a TCP connection to each address; the failures, named. */
async function probeAll(backend: string, addresses: readonly ServerAddress[], timeoutMs: number): Promise<BackendUnreachableError[]> {
  const results = await Promise.all(addresses.map((a) => probeTcp(a, timeoutMs).then(() => null, (error: unknown) => new BackendUnreachableError(`${backend} ${formatHost(a)}`, error))));
  return results.filter((r): r is BackendUnreachableError => r !== null);
}

function probeTcp(address: ServerAddress, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: address.host, port: address.port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(Object.assign(new Error(`no answer within ${timeoutMs} ms`), { code: "ETIMEDOUT", syscall: "connect" }));
    }, timeoutMs);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.destroy();
      resolve();
    });
    socket.once("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

async function peer<M>(name: string): Promise<M> {
  try {
    return (await import(name)) as M;
  } catch (error) {
    throw new Error(`this backend needs the package ${name} (npm install ${name}): ${(error as Error).message}`);
  }
}
