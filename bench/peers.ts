import { precreatePlan } from "../test/support/precreate-plan.js";
import Bottleneck from "bottleneck";
import type { Redis } from "ioredis";
import { RateLimiterMemory, RateLimiterQueue, RateLimiterRedis } from "rate-limiter-flexible";
import { MemoryLeaseBackend } from "../src/lease-backends/memory.js";
import { RedisLeaseBackend } from "../src/lease-backends/redis.js";
import type { LeaseBackend } from "../src/contract/lease-backend.js";
import { PartitionedRateLimiter } from "../src/limiter/partitioned-rate-limiter.js";
import type { PartitionedRateLimiterOptions } from "../src/limiter/options.js";
import { waitUntil } from "./common.js";

// Every limiter in the bench is built here, so each library's configuration is in one place and
// the bench can print it. Peers are configured the way their READMEs recommend for "at most
// `limit` per `intervalMs`"; the strings in PEER_CONFIG say so in the output.

/** A quota: `limit` units per `intervalMs`. */
export interface Quota {
  readonly limit: number;
  readonly intervalMs: number;
}

/** How each contender is configured, printed under the tables. */
export const PEER_CONFIG: Record<string, string> = {
  ours:
    "PartitionedRateLimiter, defaults (slicesPerInterval 10, leaseTtlMs 15000, jitterMs 5, driftFactor 0.001); " +
    "RedisLeaseBackend on an ioredis client with enableOfflineQueue:false, maxRetriesPerRequest:1, commandTimeout:2000; " +
    "plan pre-created as on a fresh server (history \"fresh\"); measured once the partitions are held",
  "rlf-memory": "rate-limiter-flexible RateLimiterMemory({ points: limit, duration: intervalMs/1000 }), consume(key)",
  "rlf-redis":
    "rate-limiter-flexible RateLimiterRedis({ storeClient: ioredis, points: limit, duration: intervalMs/1000 }), consume(key); " +
    "the same ioredis options as ours (its README asks for enableOfflineQueue:false); waiting callers use RateLimiterQueue.removeTokens(1)",
  "bottleneck-local": "bottleneck new Bottleneck({ minTime: intervalMs/limit }) (its README: \"minTime and maxConcurrent are enough for the majority of use cases\"), schedule(fn)",
  "bottleneck-cluster":
    "bottleneck clustering: new Bottleneck({ id, datastore: \"ioredis\", clientOptions: { host, port }, clearDatastore (first limiter only), minTime: intervalMs/limit }), schedule(fn); " +
    "reservoir refresh is not used because its README asks for multiples of 5000 ms when clustering",
  "p-throttle": "p-throttle pThrottle({ limit, interval: intervalMs })(fn) (local only, ESM)",
};

/** Options for our limiter in the bench: the design's defaults plus the quota. */
export function oursOptions(resource: string, quota: Quota, partitions: number, backend: LeaseBackend): PartitionedRateLimiterOptions {
  return { resource, limit: quota.limit, intervalMs: quota.intervalMs, partitions, backend };
}

/**
 * Our limiter on `backend`, with the plan stored beforehand without a grace period (a new plan
 * otherwise grants nothing for leaseTtlMs), and `minPartitions` so it takes capacity without
 * waiting for demand; resolves once `holdAll` partitions (default: all) are held.
 */
export async function startOurs(
  resource: string,
  quota: Quota,
  partitions: number,
  backend: LeaseBackend,
  holdAll = partitions,
): Promise<PartitionedRateLimiter> {
  const options = oursOptions(resource, quota, partitions, backend);
  await precreatePlan(backend, resource, { ...options, limit: quota.limit, intervalMs: quota.intervalMs, partitions });
  const limiter = new PartitionedRateLimiter({ ...options, minPartitions: holdAll });
  await waitUntil(`${backend.name} limiter to hold ${holdAll} partitions`, () => limiter.stats().heldPartitions >= holdAll);
  return limiter;
}

/** A memory backend on the system clock. */
export function memoryBackend(): MemoryLeaseBackend {
  return new MemoryLeaseBackend();
}

/** Our Redis backend on `client`. */
export function redisBackend(client: Redis, keyPrefix: string): RedisLeaseBackend {
  return new RedisLeaseBackend({ client, keyPrefix });
}

/** rate-limiter-flexible in memory. */
export function rlfMemory(quota: Quota): RateLimiterMemory {
  return new RateLimiterMemory({ points: quota.limit, duration: quota.intervalMs / 1000 });
}

/** rate-limiter-flexible on Redis. */
export function rlfRedis(quota: Quota, client: Redis, keyPrefix: string): RateLimiterRedis {
  return new RateLimiterRedis({ storeClient: client, points: quota.limit, duration: quota.intervalMs / 1000, keyPrefix });
}

/** rate-limiter-flexible's own way to wait for points instead of being refused. */
export function rlfQueue(limiter: RateLimiterRedis): RateLimiterQueue {
  return new RateLimiterQueue(limiter);
}

/** Bottleneck in this process. */
export function bottleneckLocal(quota: Quota): Bottleneck {
  return new Bottleneck({ minTime: quota.intervalMs / quota.limit });
}

/** Bottleneck clustered through Redis with its own ioredis clients; await `ready()` before use. */
export function bottleneckCluster(quota: Quota, id: string, host: string, port: number, clearDatastore = true): Bottleneck {
  return new Bottleneck({
    id,
    datastore: "ioredis",
    clientOptions: { host, port },
    // Only the first limiter of a cluster may wipe the shared state; ids are unique per run anyway.
    clearDatastore,
    minTime: quota.intervalMs / quota.limit,
  });
}

/** p-throttle is ESM-only: loaded on demand so the rest of the bench does not depend on it. */
export async function pThrottled(quota: Quota): Promise<() => Promise<void>> {
  const { default: pThrottle } = await import("p-throttle");
  const throttled = pThrottle({ limit: quota.limit, interval: quota.intervalMs })(() => undefined);
  return async () => {
    await throttled();
  };
}
