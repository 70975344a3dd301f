import { ConfigError } from "../errors/config-error.js";
import type { RedisClient } from "./redis-scripts.js";

/**
 * Checks what can be checked of an injected ioredis client. With the offline queue on (ioredis's
 * default), commands sent while the server is unreachable are queued and sent minutes later on
 * reconnect, and memory grows meanwhile; a lease backend must fail fast instead.
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
  return redis;
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
