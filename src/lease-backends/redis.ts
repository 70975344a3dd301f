import { randomUUID } from "node:crypto";
import { BackendError } from "../errors/backend-error.js";
import { ConfigError } from "../errors/config-error.js";
import { PartitionedRateLimiterError } from "../errors/partitioned-rate-limiter-error.js";
import { PlanMismatchError } from "../errors/plan-mismatch-error.js";
import { PlanMissingError } from "../errors/plan-missing-error.js";
import { canonicalPlan, parsePlan, partitionPools, type Plan } from "../contract/plan.js";
import { withDeadline } from "./call-deadline.js";
import type { CallOptions, EnsurePlanOptions, Lease, LeaseBackend, PartitionState } from "../contract/lease-backend.js";
import { checkRedisClient, whenReady } from "./redis-client.js";
import {
  parseAcquireReply,
  parseEnsurePlanReply,
  parseInspectReply,
  resourceKeys,
  scripts,
  serverTtl,
  tokenPrefix,
  type RedisClient,
  type ResourceKeys,
} from "./redis-scripts.js";

/** Options of {@link RedisLeaseBackend}. */
export interface RedisLeaseBackendOptions {
  /**
   * An ioredis client (`Redis` or `Cluster`), created with `enableOfflineQueue: false` (checked:
   * ConfigError otherwise), a small `maxRetriesPerRequest` (e.g. 1) and a `commandTimeout`
   * (e.g. 2000 ms). The backend never closes it.
   */
  client: RedisClient;
  /** Prepended to every key (default `"prl:"`). Keys are `${keyPrefix}{${resource}}:plan` and so on. */
  keyPrefix?: string;
}

/**
 * RedisLeaseBackend keeps leases in one Redis (or Redis Cluster) through an injected ioredis
 * client. Every operation is one Lua script, so one round trip and atomic:
 * `tryAcquire` takes the first free candidate with `SET NX PX` semantics and a fencing token from
 * a per-resource `INCR`; `renew` is compare-and-`PEXPIRE`; `release` is compare-and-`DEL`. Scripts
 * run by EVALSHA, falling back to EVAL once per connection that lacks them.
 *
 * Keys of a resource share the hash tag `{resource}`, so the backend works on Redis Cluster.
 * A resource without a plan key makes `tryAcquire` reject with PlanMissingError: that is how a
 * limiter notices a Redis that lost its state (restart without persistence, eviction), and it
 * answers with `ensurePlan`, whose grace period lets forgotten leases run out first.
 *
 * Safety caveats: a single Redis is a single point of failure for availability (not for the rate
 * promise: held leases run to their local deadlines). With asynchronous replication, a failover
 * may forget grants; the plan key is lost with them only if the replica never had it, so run
 * with `graceMs >= leaseTtlMs` and prefer {@link RedlockLeaseBackend} or etcd where failover matters.
 * Requires Redis 5 or later (scripts use effect replication).
 */
export class RedisLeaseBackend implements LeaseBackend {
  /** `"redis"`. */
  readonly name = "redis";
  private readonly client: RedisClient;
  private readonly keyPrefix: string;

  /** Creates a backend on `options.client`; throws ConfigError for a client that would queue commands offline. */
  constructor(options: RedisLeaseBackendOptions) {
    this.client = checkRedisClient("client", options?.client);
    const keyPrefix = options.keyPrefix ?? "prl:";
    if (typeof keyPrefix !== "string" || /[{}]/.test(keyPrefix)) {
      throw new ConfigError("keyPrefix", keyPrefix, "a string without { or } (they would break the hash tag)");
    }
    this.keyPrefix = keyPrefix;
  }

  async ensurePlan(resource: string, plan: Plan, opts: EnsurePlanOptions): Promise<void> {
    const wanted = canonicalPlan(plan);
    const keys = this.keys(resource);
    const graceMs = Math.max(0, Math.ceil(opts.graceMs));
    const reply = await this.call("ensurePlan", opts, async () =>
      parseEnsurePlanReply(await scripts.ensurePlan.run(this.client, [keys.plan, keys.grace, keys.fence], [wanted, graceMs])),
    );
    if (reply.created) return;
    const stored = parsePlan(reply.stored);
    if (!stored || canonicalPlan(stored) !== wanted) throw new PlanMismatchError(resource, reply.stored, wanted);
  }

  async readPlan(resource: string, opts: CallOptions): Promise<Plan | null> {
    const stored = await this.call("readPlan", opts, () => this.client.get(this.keys(resource).plan));
    return stored === null ? null : parsePlan(stored);
  }

  async tryAcquire(
    resource: string,
    candidates: readonly number[],
    holderId: string,
    ttlMs: number,
    opts: CallOptions,
  ): Promise<Lease | null> {
    const ttl = serverTtl(ttlMs);
    const keys = this.keys(resource);
    const valid = candidates.filter((p) => Number.isSafeInteger(p) && p >= 0);
    const token = randomUUID();
    const reply = await this.call("tryAcquire", opts, async () =>
      parseAcquireReply(
        await scripts.acquire.run(
          this.client,
          [keys.plan, keys.grace, keys.fence, ...valid.map((p) => keys.partitionBase + p)],
          [token, holderId, ttl, ...valid],
        ),
      ),
    );
    switch (reply.kind) {
      case "missing":
        throw new PlanMissingError(resource);
      case "grace":
      case "taken":
        return null;
      case "granted":
        return { resource, partition: reply.partition, holderId, token, fencingToken: reply.fencingToken };
    }
  }

  async renew(lease: Lease, ttlMs: number, opts: CallOptions): Promise<boolean> {
    const ttl = serverTtl(ttlMs);
    const key = this.keys(lease.resource).partitionBase + lease.partition;
    const reply = await this.call("renew", opts, () => scripts.renew.run(this.client, [key], [tokenPrefix(lease.token), ttl]));
    return reply === 1;
  }

  async release(lease: Lease, opts: CallOptions): Promise<void> {
    const key = this.keys(lease.resource).partitionBase + lease.partition;
    await this.call("release", opts, () => scripts.release.run(this.client, [key], [tokenPrefix(lease.token)]));
  }

  async inspect(resource: string, opts: CallOptions): Promise<PartitionState[]> {
    const keys = this.keys(resource);
    const reply = await this.call("inspect", opts, async () =>
      parseInspectReply(await scripts.inspect.run(this.client, [keys.plan], [keys.partitionBase])),
    );
    const plan = reply ? parsePlan(reply.plan) : null;
    if (!reply || !plan) return [];
    return partitionPools(plan).map((pool, partition) => {
      const seen = reply.partitions[partition];
      const grant = seen?.grant ?? null;
      return {
        partition,
        pool,
        holderId: grant?.holderId ?? null,
        expiresInMs: grant ? (seen?.pttlMs ?? null) : null,
        fencingToken: grant?.fencingToken ?? null,
      };
    });
  }

  /** Does nothing: the injected client is the caller's to close. */
  async close(): Promise<void> {}

  private keys(resource: string): ResourceKeys {
    return resourceKeys(this.keyPrefix, resource);
  }

  private call<T>(operation: string, opts: CallOptions, command: () => Promise<T>): Promise<T> {
    return withDeadline(`redis backend ${operation}`, opts, async (signal) => {
      try {
        await whenReady(this.client, signal);
        return await command();
      } catch (error) {
        if (signal.aborted) throw signal.reason;
        if (PartitionedRateLimiterError.isError(error)) throw error;
        throw new BackendError(this.name, operation, error);
      }
    });
  }
}
