import { randomUUID } from "node:crypto";
import { ConfigError } from "../errors/config-error.js";
import { PlanMismatchError } from "../errors/plan-mismatch-error.js";
import { PlanMissingError } from "../errors/plan-missing-error.js";
import { encodeHolderRecord, validateHolderRecord } from "../contract/holder-record.js";
import type {
  AcquireRequest,
  AcquireResult,
  CallOptions,
  EnsurePlanOptions,
  HeartbeatRequest,
  HeartbeatResult,
  Lease,
  LeaseBackend,
  LeaseTtlRule,
  ResourceState,
} from "../contract/lease-backend.js";
import { decodeStoredPlan, encodeStoredPlan, partitionPools, storedPlanBody, storedPlanOrThrow, validatePlan, type Plan, type StoredPlan } from "../contract/plan.js";
import { MAX_LEASE_TTL_MS, creationGraceMs, deletionGraceMs, switchGraceMs } from "../contract/timing.js";
import { backendCall } from "./backend-call.js";
import { checkRedisClient, describeRedisFailure, whenReady } from "./redis-client.js";
import { toPublishedHolders } from "./redis-records.js";
import {
  parseAcquireReply,
  parseHeartbeatReply,
  parseInspectReply,
  parsePlanWriteReply,
  resourceKeys,
  scripts,
  tokenPrefix,
  type RedisClient,
  type ResourceKeys,
} from "./redis-scripts.js";

/** Options of {@link RedisLeaseBackend}. */
export interface RedisLeaseBackendOptions {
  /**
   * An ioredis client (`Redis`, or `Cluster` with `scaleReads: "master"`), created with
   * `enableOfflineQueue: false` (checked: ConfigError otherwise), a small `maxRetriesPerRequest`
   * (e.g. 1) and a `commandTimeout` (e.g. 2000 ms). The backend never closes it.
   */
  client: RedisClient;
  /** Prepended to every key (default `"prl:"`). Keys are `${keyPrefix}{${resource}}:plan` and so on. */
  keyPrefix?: string;
}

/**
 * RedisLeaseBackend keeps plans, leases and holder records in one Redis (or a Redis Cluster, or
 * the primary a Sentinel names) through an injected ioredis client. Every operation is one Lua
 * script, so one round trip and atomic: `tryAcquire` takes the first free candidate with `SET NX
 * PX` semantics and a fencing token from a per-resource `INCR`; `heartbeat` renews every held
 * lease by compare-and-`PEXPIRE`, publishes the holder's record and returns everyone's;
 * `release` is compare-and-`DEL`. Keys of a resource share the hash tag `{resource}`.
 *
 * What it detects: every script reads the server's `run_id` (`INFO server`) and compares it with
 * the one stored beside the plan. A Redis restarted from an RDB or AOF file (which brings back the
 * plan but forgets or ages leases) or a replica promoted by Sentinel or Cluster failover (which may
 * lack the latest writes) changes it; the first script that notices starts the restore grace
 * (`backendEpochGraceMs` of the stored plan, the longest lease TTL and a window), atomically,
 * before anything is granted, and moves the fencing counter past every token issued before. A
 * Redis restarted empty also loses the plan: the limiter stores it again, with a grace. What it
 * cannot detect: keys deleted or evicted while the server runs (run Redis with
 * `maxmemory-policy noeviction`, the default, and do not `FLUSHALL` a live resource), and
 * `DEBUG RELOAD NOSAVE` or `DEBUG LOADAOF`, which load an older file into the running process
 * under the same `run_id` (plain `DEBUG RELOAD` saves first, so it forgets nothing). The fence
 * counter jumps to the server's clock in µs, so after a restore it grows only while that clock
 * is ahead of the counter (it is unless the server's clock was set back).
 *
 * A new resource starts without a grace when the server proves nothing it granted can still be in
 * use: no trace of the resource, a primary not promoted since it started, up longer than the
 * grace the plan would get. `replacePlan` also stores over a plan that cannot be read (edited by
 * hand, or written by version 0.1), with the grace of an unknown history. Requires Redis 5 or
 * later (scripts use effect replication).
 */
export class RedisLeaseBackend implements LeaseBackend {
  /** `"redis"`. */
  readonly name = "redis";
  /** A lease key keeps its absolute expiry in RDB and AOF files and on replicas: once expired it never comes back. */
  readonly revivesExpiredLeases = false;
  /** Any whole-ms TTL up to the library's maximum (PX has ms resolution). */
  readonly leaseTtlRule: LeaseTtlRule = { minMs: 1, maxMs: MAX_LEASE_TTL_MS, stepMs: 1, reason: "Redis PX expiries have ms resolution" };
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

  async ensurePlan(resource: string, plan: Plan, opts: EnsurePlanOptions): Promise<StoredPlan> {
    const wanted = validatePlan(plan, "plan.");
    const keys = this.keys(resource);
    const graceMs = creationGraceMs(wanted, opts.history ?? "unknown");
    const reply = await this.call("ensurePlan", opts, async () =>
      parsePlanWriteReply(
        await scripts.ensurePlan.run(this.client, planKeys(keys), [storedPlanBody(wanted), graceMs, wanted.partitions, keys.partitionBase]),
        "ensurePlan",
      ),
    );
    return storedPlanOrThrow(resource, reply.text);
  }

  async readPlan(resource: string, opts: CallOptions): Promise<StoredPlan | null> {
    const text = await this.call("readPlan", opts, () => this.client.get(this.keys(resource).plan));
    return text === null ? null : storedPlanOrThrow(resource, text);
  }

  async replacePlan(resource: string, plan: Plan, opts: CallOptions & { expectedEpoch?: number }): Promise<StoredPlan> {
    const wanted = validatePlan(plan, "plan.");
    const keys = this.keys(resource);
    return this.call("replacePlan", opts, async (signal) => {
      // Compare and set: the grace is computed from the plan it replaces, which must still be there.
      for (let attempt = 0; attempt < 5; attempt++) {
        const text = (await this.client.get(keys.plan)) ?? "";
        const current = readableOrNull(text);
        checkExpectedEpoch(resource, current, opts.expectedEpoch);
        const graceMs = replacementGraceMs(current, wanted);
        signal.throwIfAborted();
        const reply = parsePlanWriteReply(await scripts.replacePlan.run(this.client, planKeys(keys), [text, storedPlanBody(wanted), graceMs, ""]), "replacePlan");
        if (reply.done) return storedPlanOrThrow(resource, reply.text);
      }
      throw new Error("the stored plan kept changing during replacePlan");
    });
  }

  async deletePlan(resource: string, opts: CallOptions): Promise<boolean> {
    const keys = this.keys(resource);
    return this.call("deletePlan", opts, async (signal) => {
      for (let attempt = 0; attempt < 5; attempt++) {
        const text = await this.client.get(keys.plan);
        if (text === null) return false;
        const current = storedPlanOrThrow(resource, text);
        signal.throwIfAborted();
        const reply = parsePlanWriteReply(await scripts.deletePlan.run(this.client, planKeys(keys), [text, deletionGraceMs(current.plan)]), "deletePlan");
        if (reply.done) return true;
        if (reply.text === "") return false;
      }
      throw new Error("the stored plan kept changing during deletePlan");
    });
  }

  async tryAcquire(request: AcquireRequest, opts: CallOptions): Promise<AcquireResult> {
    const { resource, holderId } = request;
    const epoch = request.plan.epoch;
    const keys = this.keys(resource);
    const candidates = request.candidates.filter((p) => Number.isSafeInteger(p) && p >= 0);
    const token = randomUUID();
    const reply = await this.call("tryAcquire", opts, async () =>
      parseAcquireReply(
        await scripts.acquire.run(
          this.client,
          [keys.plan, keys.server, keys.grace, keys.fence, ...candidates.map((p) => keys.partitionBase + p)],
          [token, holderId, encodeStoredPlan(request.plan), ...candidates],
        ),
      ),
    );
    switch (reply.kind) {
      case "missing":
        throw new PlanMissingError(resource);
      case "unreadable":
        throw new PlanMismatchError(resource, "(unreadable)", "", "cannot be read; store a plan with `partitioned-rate-limiter plan --replace`");
      case "epoch":
        return { kind: "plan-changed", epoch: reply.epoch };
      case "grace":
        return { kind: "grace", remainingMs: reply.remainingMs };
      case "taken":
        return { kind: "taken" };
      case "granted":
        return { kind: "granted", lease: { resource, partition: reply.partition, holderId, token, fencingToken: reply.fencingToken, epoch } };
    }
  }

  async heartbeat(request: HeartbeatRequest, opts: CallOptions): Promise<HeartbeatResult> {
    const { resource, leases } = request;
    const keys = this.keys(resource);
    const holder = validateHolderRecord(request.holder, request.plan.plan.partitions);
    const sent = renewable(request);
    const reply = await this.call("heartbeat", opts, async () =>
      parseHeartbeatReply(
        await scripts.heartbeat.run(
          this.client,
          [keys.plan, keys.server, keys.grace, keys.fence, keys.holders, ...sent.map((l) => keys.partitionBase + l.partition)],
          [encodeStoredPlan(request.plan), holder.holderId, encodeHolderRecord(holder), ...sent.map((l) => tokenPrefix(l.token))],
        ),
      ),
    );
    return {
      renewed: leases.map((l) => {
        const i = sent.indexOf(l);
        return i >= 0 && (reply.renewed[i] ?? false);
      }),
      samePlan: reply.samePlan,
      epoch: reply.epoch,
      graceMs: reply.graceMs,
      holders: toPublishedHolders(reply.records),
    };
  }

  async release(lease: Lease, opts: CallOptions): Promise<void> {
    const key = this.keys(lease.resource).partitionBase + lease.partition;
    await this.call("release", opts, () => scripts.release.run(this.client, [key], [tokenPrefix(lease.token)]));
  }

  async inspect(resource: string, opts: CallOptions): Promise<ResourceState> {
    const keys = this.keys(resource);
    const reply = await this.call("inspect", opts, async () =>
      parseInspectReply(await scripts.inspect.run(this.client, [keys.plan, keys.grace, keys.holders], [keys.partitionBase])),
    );
    return inspectedState(resource, reply);
  }

  /** Does nothing: the injected client is the caller's to close. */
  async close(): Promise<void> {}

  private keys(resource: string): ResourceKeys {
    return resourceKeys(this.keyPrefix, resource);
  }

  /**
   * Runs `command` under the call's deadline once the client is connected. Calls of more than one
   * command (replacePlan, deletePlan) check `signal` before each further one, so a call that timed
   * out does not write after its caller was told it failed.
   */
  private call<T>(operation: string, opts: CallOptions, command: (signal: AbortSignal) => Promise<T>): Promise<T> {
    return backendCall(this.name, operation, opts, async (signal) => {
      try {
        await whenReady(this.client, signal);
        signal.throwIfAborted();
        return await command(signal);
      } catch (error) {
        throw describeRedisFailure(this.client, error);
      }
    });
  }
}

/**
 * The leases of a heartbeat that may be renewed: those of its resource and its plan's epoch. The
 * others are not sent at all, so the script cannot extend an old-epoch grant that it would then
 * report as not renewed (its partition would stay blocked for another TTL).
 */
export function renewable(request: HeartbeatRequest): Lease[] {
  return request.leases.filter((l) => l.resource === request.resource && l.epoch === request.plan.epoch);
}

/**
 * The stored plan a text decodes to, or null when there is none or it cannot be read (written by
 * hand, or by version 0.1): replacePlan stores over those, which is how they are repaired.
 */
export function readableOrNull(text: string | null): StoredPlan | null {
  if (text === null || text === "") return null;
  const decoded = decodeStoredPlan(text);
  return decoded.kind === "plan" ? decoded.stored : null;
}

/**
 * The grace of a plan stored by replacePlan over `current`: the switch grace, or where nothing
 * readable was stored the grace of an unknown history (leases of any plan may still be in use).
 */
export function replacementGraceMs(current: StoredPlan | null, next: Plan): number {
  return current ? switchGraceMs(current.plan, next) : creationGraceMs(next, "unknown");
}

/** The keys every plan-writing script takes, in its order. */
export function planKeys(keys: ResourceKeys): string[] {
  return [keys.plan, keys.server, keys.grace, keys.fence, keys.epoch];
}

/** Throws PlanMismatchError when `expectedEpoch` is given and the stored epoch differs. */
export function checkExpectedEpoch(resource: string, current: StoredPlan | null, expectedEpoch: number | undefined): void {
  if (expectedEpoch !== undefined && (current?.epoch ?? 0) !== expectedEpoch) {
    throw new PlanMismatchError(resource, JSON.stringify(current), "", `has epoch ${current?.epoch ?? "none"}, not the expected ${expectedEpoch}`);
  }
}

/** A ResourceState from the inspect script's reply. */
export function inspectedState(resource: string, reply: ReturnType<typeof parseInspectReply>): ResourceState {
  const stored = reply.text === null ? null : storedPlanOrThrow(resource, reply.text);
  if (!stored) return { stored: null, graceMs: reply.graceMs, partitions: [], holders: toPublishedHolders(reply.records) };
  const partitions = partitionPools(stored.plan).map((pool, partition) => {
    const seen = reply.partitions[partition];
    const grant = seen?.grant ?? null;
    return {
      partition,
      pool,
      holderId: grant?.holderId ?? null,
      expiresInMs: grant ? (seen?.pttlMs ?? null) : null,
      fencingToken: grant?.fencingToken ?? null,
      epoch: grant?.epoch ?? null,
    };
  });
  return { stored, graceMs: reply.graceMs, partitions, holders: toPublishedHolders(reply.records) };
}
