import { Redis } from "ioredis";

// No jest imports here.

/**
 * Sends one command to the Redis at host:port on a fresh connection and returns the reply: for
 * launchers asking servers about themselves (CLUSTER NODES, INFO, SENTINEL …). Bounded: fails after
 * `timeoutMs` (default 1,500) instead of waiting for a dead or paused server.
 */
export async function redisCommand(port: number, args: readonly (string | number)[], timeoutMs = 1500, host = "127.0.0.1"): Promise<unknown> {
  const client = new Redis({
    host,
    port,
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: timeoutMs,
    commandTimeout: timeoutMs,
  });
  client.on("error", () => undefined);
  try {
    await client.connect();
    const [name, ...rest] = args;
    return await client.call(String(name), ...rest.map(String));
  } finally {
    client.disconnect();
  }
}

/** The fields of an `INFO` reply (`key:value` lines), by key. */
export function parseInfo(reply: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of String(reply).split(/\r?\n/)) {
    const at = line.indexOf(":");
    if (at > 0 && !line.startsWith("#")) out[line.slice(0, at)] = line.slice(at + 1).trim();
  }
  return out;
}
