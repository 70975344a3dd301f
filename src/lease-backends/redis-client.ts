import { ConfigError } from "../errors/config-error.js";
import { PartitionedRateLimiterError } from "../errors/partitioned-rate-limiter-error.js";
import type { RedisClient } from "./redis-scripts.js";

/** The last connection error each client reported, to explain a failed command. */
const lastErrors = new WeakMap<object, { error: Error; at: number }>();
const watched = new WeakSet<object>();

/**
 * Checks what can be checked of an injected ioredis client. With the offline queue on (ioredis's
 * default), commands sent while the server is unreachable are queued and sent minutes later on
 * reconnect, and memory grows meanwhile; a lease backend must fail fast instead. It also listens
 * to the client's `error` events, so a failed call can say why the connection failed (the
 * command itself only reports "Connection is closed.").
 */
export function checkRedisClient(option: string, client: unknown): RedisClient {
  if (typeof client !== "object" || client === null || typeof (client as RedisClient).evalsha !== "function") {
    throw new ConfigError(option, client, "an ioredis client (new Redis(...) or new Cluster(...))");
  }
  const redis = client as RedisClient;
  if (redis.options?.enableOfflineQueue !== false) {
    throw new ConfigError(
      `${option}.options.enableOfflineQueue`,
      redis.options?.enableOfflineQueue,
      "false",
      "create the client with { enableOfflineQueue: false, maxRetriesPerRequest: 1, commandTimeout: 2000 } " +
        "so that calls against an unreachable Redis fail at once instead of queueing",
    );
  }
  if (!watched.has(redis)) {
    watched.add(redis);
    redis.on("error", (error: Error) => lastErrors.set(redis, { error, at: Date.now() }));
    redis.on("ready", () => lastErrors.delete(redis));
  }
  return redis;
}

/** `host:port` of a client (the first startup node of a Cluster). */
export function redisAddress(client: RedisClient): string {
  const o = client.options as { host?: string; port?: number; path?: string };
  if (o.path) return o.path;
  if (o.host !== undefined || o.port !== undefined) return `${o.host ?? "localhost"}:${o.port ?? 6379}`;
  const nodes = (client as { startupNodes?: Array<{ host?: string; port?: number } | string | number> }).startupNodes ?? [];
  const first = nodes[0];
  if (typeof first === "object" && first) return `${first.host ?? "localhost"}:${first.port ?? 6379}`;
  return first === undefined ? "cluster" : String(first);
}

/**
 * An error for a failed command that names the server and, when the connection is the problem,
 * the connection's own error (e.g. `connect ECONNREFUSED 127.0.0.1:6390`) as message and cause.
 */
export function describeRedisFailure(client: RedisClient, error: unknown): unknown {
  if (!(error instanceof Error) || error.name === "ReplyError" || PartitionedRateLimiterError.isError(error)) return error;
  const last = lastErrors.get(client);
  const connection = client.status !== "ready" && last ? last.error : null;
  const detail = connection ? `${connection.message} (${error.message})` : error.message;
  return new Error(`redis ${redisAddress(client)}: ${detail}`, { cause: connection ?? error });
}

/**
 * Waits until `client` is connected, when it is still making its first connection (or was made
 * with `lazyConnect`): without the offline queue, a command sent before then would fail although
 * the server is fine. A client that is reconnecting is not waited for, so calls fail fast while
 * the server is away. Settles when the client is ready, closes, or `signal` aborts.
 */
export async function whenReady(client: RedisClient, signal: AbortSignal): Promise<void> {
  const status = client.status;
  if (status !== "wait" && status !== "connecting" && status !== "connect") return;
  if (status === "wait") client.connect().catch(() => undefined);
  await new Promise<void>((resolve, reject) => {
    const cleanup = () => {
      client.off("ready", onSettle);
      client.off("close", onSettle);
      client.off("end", onSettle);
      signal.removeEventListener("abort", onAbort);
    };
    const onSettle = () => {
      cleanup();
      resolve();
    };
    const onAbort = () => {
      cleanup();
      reject(signal.reason);
    };
    if (signal.aborted) return onAbort();
    client.once("ready", onSettle);
    client.once("close", onSettle);
    client.once("end", onSettle);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}
