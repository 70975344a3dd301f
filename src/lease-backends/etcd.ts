import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import type {
  Etcd3,
  ICompare,
  IDuplexStream,
  IKeyValue,
  ILeaseKeepAliveRequest,
  ILeaseKeepAliveResponse,
  IRequestOp,
  ITxnRequest,
  ITxnResponse,
} from "etcd3";
import { BackendError } from "../errors/backend-error.js";
import { ConfigError } from "../errors/config-error.js";
import { PartitionedRateLimiterError } from "../errors/partitioned-rate-limiter-error.js";
import { PlanMismatchError } from "../errors/plan-mismatch-error.js";
import { PlanMissingError } from "../errors/plan-missing-error.js";
import { canonicalPlan, parsePlan, partitionPools, type Plan } from "../contract/plan.js";
import { finiteNumber, holderIdValue, resourceName } from "../contract/validate.js";
import { withDeadline } from "./call-deadline.js";
import { HolderLease, makeToken, parseToken, type Condemned } from "./etcd-holder-lease.js";
import type { CallOptions, EnsurePlanOptions, Lease, LeaseBackend, PartitionState } from "../contract/lease-backend.js";

/** Options of {@link EtcdLeaseBackend}. */
export interface EtcdLeaseBackendOptions {
  /**
   * An `etcd3` client, owned by the caller (close() does not close it). Configure it so a dead
   * server fails calls instead of queueing them behind retries and an open circuit breaker:
   * `new Etcd3({ hosts, faultHandling: { host: () => noop, global: noop } })` with `noop` from
   * `cockatiel`. With the default policies a call may be retried up to 3 times, and after 3
   * failures the circuit breaker refuses every call for 5 s, also after the server is back. The
   * backend bounds every call by its `timeoutMs` regardless (as a gRPC deadline and a local
   * timer), so the defaults never make a call hang, only fail longer.
   */
  client: Etcd3;
  /** Prefix of every key this backend writes (default `"partitioned-rate-limiter/"`). */
  prefix?: string;
}

/** Keys of one resource: `<prefix><resource>/plan`, `/grace`, `/p/<partition>`. */
interface ResourceKeys {
  readonly base: string;
  readonly plan: string;
  readonly grace: string;
  readonly partitions: string;
}

/** gRPC call options we pass: a transport deadline (wall-clock ms, as gRPC requires). */
interface GrpcOptions {
  deadline: number;
}

type Operation = "ensurePlan" | "readPlan" | "tryAcquire" | "renew" | "release" | "inspect";

/** A gRPC deadline for calls with only a signal, so an abandoned call cannot linger forever. */
const DEFAULT_DEADLINE_MS = 30_000;
/** How much later than the caller's timeout the gRPC deadline falls. */
const DEADLINE_SLACK_MS = 200;
/** Candidates per transaction: nested transactions one level per candidate, kept shallow. */
const CANDIDATES_PER_TXN = 32;
/** Compare-deletes per sweep transaction, under etcd's default `--max-txn-ops` of 128. */
const SWEEP_BATCH = 100;
/** How often tryAcquire starts over when the holder's etcd lease vanished or the plan changed. */
const ACQUIRE_ATTEMPTS = 3;

/**
 * EtcdLeaseBackend grants partition leases in etcd through an injected `etcd3` client.
 *
 * Layout: one etcd lease per (holder, TTL) carries every partition key that holder took with that
 * TTL, so one keepalive renews all of them on the server. A partition key `<prefix><resource>/p/<n>`
 * holds `<token> <holderId>`; its create revision is the fencing token. The plan is stored at
 * `/plan` and a grace period is a key `/grace` on its own etcd lease, created in the same
 * transaction as the plan.
 *
 * Round trips (measured against a local etcd, see the tests):
 * - tryAcquire: one transaction that compares the plan and the grace key and then, nested one
 *   level per candidate, takes the first candidate whose create revision is 0 (up to 32 candidates
 *   per transaction; more take one more transaction each). Sent together with a keepalive of the
 *   holder's etcd lease (which must be extended after the call started, or the new key could
 *   expire before `ttl`): one round trip of latency. The first acquire of a (holder, TTL) first
 *   grants the etcd lease (one more), and the first call on a resource reads its plan (one more).
 * - renew: a keepalive of the etcd lease and a read of the partition key, in parallel: one round
 *   trip. True only if the lease is alive and the key still holds this grant's token.
 * - release: a compare-value delete, or a revoke of the etcd lease when this is its last
 *   partition: one round trip.
 * - inspect: a range read of the resource, then one TTL query per distinct etcd lease in
 *   parallel: two round trips.
 *
 * TTLs are whole seconds, at least 2 s (etcd's rule): any other `leaseTtlMs` is a ConfigError.
 * A Lease must be renewed and released through the backend instance that granted it: the
 * instance tracks, per etcd lease, which partitions are still renewed, and deletes those that went
 * a whole TTL without a successful renewal (they would otherwise live as long as their siblings).
 * Nothing here relies on the client's late `lost` event, and no timers run between calls.
 */
export class EtcdLeaseBackend implements LeaseBackend {
  /** `"etcd"`. */
  readonly name = "etcd";
  private readonly client: Etcd3;
  private readonly prefix: string;
  private readonly plans = new Map<string, { text: string; plan: Plan }>();
  /** Holder leases by `"<ttlSeconds> <holderId>"`. */
  private readonly holders = new Map<string, HolderLease>();
  /** Holder leases by etcd lease id. */
  private readonly byId = new Map<string, HolderLease>();
  private readonly granting = new Map<string, Promise<HolderLease>>();
  private closed = false;

  /** Creates a backend on `options.client`; throws ConfigError for a missing client or a bad prefix. */
  constructor(options: EtcdLeaseBackendOptions) {
    const client = (options as Partial<EtcdLeaseBackendOptions> | undefined)?.client;
    if (typeof client !== "object" || client === null || typeof client.kv?.txn !== "function") {
      throw new ConfigError("client", client, "an etcd3 Etcd3 client");
    }
    const prefix = options.prefix ?? "partitioned-rate-limiter/";
    if (typeof prefix !== "string" || prefix.length > 200) {
      throw new ConfigError("prefix", prefix, "a string of at most 200 characters");
    }
    this.client = client;
    this.prefix = prefix;
  }

  async ensurePlan(resource: string, plan: Plan, opts: EnsurePlanOptions): Promise<void> {
    const keys = this.keys(resource);
    const wanted = canonicalPlan(plan);
    const graceSeconds = Math.ceil(finiteNumber("graceMs", opts.graceMs, { min: 0, max: 86_400_000 }) / 1000);
    return this.call("ensurePlan", opts, async (grpc) => {
      const existing = await this.get(keys.plan, grpc);
      if (existing) return this.verifyPlan(resource, existing.value.toString(), wanted);
      const graceLease = graceSeconds > 0 ? (await this.client.leaseClient.leaseGrant({ TTL: graceSeconds }, grpc)).ID : null;
      const success: IRequestOp[] = [{ request_put: { key: Buffer.from(keys.plan), value: Buffer.from(wanted) } }];
      if (graceLease) success.push({ request_put: { key: Buffer.from(keys.grace), value: Buffer.alloc(0), lease: graceLease } });
      const response = await this.client.kv.txn(
        {
          compare: [createRevisionIs(keys.plan, 0)],
          success,
          failure: [{ request_range: { key: Buffer.from(keys.plan) } }],
        },
        grpc,
      );
      if (response.succeeded) {
        this.plans.set(resource, { text: wanted, plan: parsePlan(wanted) ?? plan });
        return;
      }
      // Someone stored a plan first: our grace lease is not needed.
      if (graceLease) await this.client.leaseClient.leaseRevoke({ ID: graceLease }, grpc).catch(() => undefined);
      const stored = response.responses[0]?.response_range?.kvs[0];
      return this.verifyPlan(resource, stored?.value.toString() ?? "", wanted);
    });
  }

  async readPlan(resource: string, opts: CallOptions): Promise<Plan | null> {
    const keys = this.keys(resource);
    return this.call("readPlan", opts, async (grpc) => {
      const kv = await this.get(keys.plan, grpc);
      return kv ? this.cachePlan(resource, kv.value.toString()) : null;
    });
  }

  async tryAcquire(
    resource: string,
    candidates: readonly number[],
    holderId: string,
    ttlMs: number,
    opts: CallOptions,
  ): Promise<Lease | null> {
    const keys = this.keys(resource);
    holderIdValue("holderId", holderId);
    const ttlSeconds = leaseTtlSeconds(ttlMs);
    const startedAt = performance.now();
    return this.call("tryAcquire", opts, async (grpc, signal) => {
      let cached = this.plans.get(resource) ?? null;
      if (!cached) {
        const kv = await this.get(keys.plan, grpc);
        if (!kv) throw new PlanMissingError(resource);
        this.cachePlan(resource, kv.value.toString());
        cached = this.plans.get(resource) ?? null;
        if (!cached) throw new BackendError(this.name, "tryAcquire", new Error(`the stored plan of "${resource}" is unreadable`));
      }
      for (let attempt = 0; attempt < ACQUIRE_ATTEMPTS; attempt++) {
        const partitions = cached.plan.partitions;
        const valid = [...new Set(candidates)].filter((p) => Number.isInteger(p) && p >= 0 && p < partitions);
        if (valid.length === 0) return null;
        const holder = await this.holderLease(holderId, ttlSeconds, grpc);
        // Checked and claimed in one synchronous step, so release() cannot revoke it under us.
        if (holder.retired) continue;
        holder.inFlight++;
        try {
          const outcome = await this.acquireOn(holder, resource, keys, cached.text, valid, holderId, ttlMs, startedAt, grpc, signal);
          if (outcome.kind === "granted") return outcome.lease;
          if (outcome.kind === "none") return null;
          if (outcome.kind === "plan-missing") {
            this.plans.delete(resource);
            throw new PlanMissingError(resource);
          }
          if (outcome.kind === "plan-changed") {
            cached = this.plans.get(resource) ?? null;
            if (!cached) throw new BackendError(this.name, "tryAcquire", new Error(`the stored plan of "${resource}" is unreadable`));
          }
          // "lease-gone": the holder lease expired or was forgotten; the next attempt grants a new one.
        } finally {
          holder.inFlight--;
        }
      }
      throw new BackendError(this.name, "tryAcquire", new Error(`no stable state after ${ACQUIRE_ATTEMPTS} attempts`));
    });
  }

  async renew(lease: Lease, ttlMs: number, opts: CallOptions): Promise<boolean> {
    const ttlSeconds = leaseTtlSeconds(ttlMs);
    const parts = parseToken(lease.token);
    if (!parts) return this.call("renew", opts, async () => false);
    if (ttlSeconds > parts.ttlSeconds) {
      throw new ConfigError(
        "leaseTtlMs",
        ttlMs,
        `at most ${parts.ttlSeconds * 1000} (the TTL this lease was granted with; an etcd lease keeps its TTL)`,
      );
    }
    const key = this.keys(lease.resource).partition(lease.partition);
    const value = grantValue(lease.token, lease.holderId);
    const holder = this.byId.get(parts.leaseId);
    const grant = holder?.grants.get(key);
    const tracked = grant && grant.value === value ? grant : undefined;
    const startedAt = performance.now();
    return this.call("renew", opts, async (grpc, signal) => {
      if (holder?.isCondemned(key, value)) return false;
      if (tracked) tracked.renewing++;
      try {
        const sweep = holder && !holder.retired ? holder.staleGrants(startedAt) : [];
        const [ttl, kv] = await Promise.all([
          this.keepAlive(parts.leaseId, grpc, signal),
          this.get(key, grpc),
          this.sweep(holder, sweep, grpc),
        ]);
        if (ttl <= 0 && holder) this.retire(holder);
        const ok = ttl > 0 && kv !== null && kv.value.toString() === value && String(kv.lease) === parts.leaseId;
        if (tracked) {
          if (ok) tracked.okSentAt = Math.max(tracked.okSentAt, startedAt);
          else if (holder?.grants.get(key) === tracked) holder.grants.delete(key);
        }
        return ok;
      } finally {
        if (tracked) tracked.renewing--;
      }
    });
  }

  async release(lease: Lease, opts: CallOptions): Promise<void> {
    const parts = parseToken(lease.token);
    const key = this.keys(lease.resource).partition(lease.partition);
    const value = grantValue(lease.token, lease.holderId);
    return this.call("release", opts, async (grpc) => {
      if (!parts) return;
      const holder = this.byId.get(parts.leaseId);
      const grant = holder?.grants.get(key);
      if (holder && grant?.value === value) {
        holder.grants.delete(key);
        if (holder.grants.size === 0 && holder.condemned.size === 0 && holder.inFlight === 0 && !holder.retired) {
          // The last partition on this etcd lease: revoking it deletes the key too, in one call.
          this.retire(holder);
          await this.client.leaseClient.leaseRevoke({ ID: holder.id }, grpc).catch((error: unknown) => {
            if (!isLeaseNotFound(error)) throw error;
          });
          return;
        }
      }
      await this.client.kv.txn(
        { compare: [valueIs(key, value)], success: [{ request_delete_range: { key: Buffer.from(key) } }], failure: [] },
        grpc,
      );
    });
  }

  async inspect(resource: string, opts: CallOptions): Promise<PartitionState[]> {
    const keys = this.keys(resource);
    return this.call("inspect", opts, async (grpc) => {
      const range = await this.client.kv.range({ key: Buffer.from(keys.base), range_end: prefixEnd(keys.base) }, grpc);
      const planKv = range.kvs.find((kv) => kv.key.toString() === keys.plan);
      const plan = planKv ? this.cachePlan(resource, planKv.value.toString()) : null;
      if (!plan) return [];
      const held = new Map<number, IKeyValue>();
      for (const kv of range.kvs) {
        const name = kv.key.toString();
        if (!name.startsWith(keys.partitions)) continue;
        const partition = Number(name.slice(keys.partitions.length));
        if (Number.isInteger(partition) && partition >= 0 && partition < plan.partitions) held.set(partition, kv);
      }
      const leaseIds = [...new Set([...held.values()].map((kv) => String(kv.lease)))];
      const ttls = new Map<string, number>();
      await Promise.all(
        leaseIds.map(async (id) => {
          const info = await this.client.leaseClient.leaseTimeToLive({ ID: id }, grpc);
          ttls.set(id, Number(info.TTL));
        }),
      );
      return partitionPools(plan).map((pool, partition) => {
        const kv = held.get(partition);
        const ttl = kv ? (ttls.get(String(kv.lease)) ?? -1) : -1;
        if (!kv || ttl <= 0) return { partition, pool, holderId: null, expiresInMs: null, fencingToken: null };
        const text = kv.value.toString();
        const space = text.indexOf(" ");
        return {
          partition,
          pool,
          holderId: space >= 0 ? text.slice(space + 1) : text,
          expiresInMs: ttl * 1000,
          fencingToken: Number(kv.create_revision),
        };
      });
    });
  }

  /**
   * Stops using the backend: later calls reject with BackendError. Revokes only the etcd leases
   * this instance granted that carry no partition any more; leases with partitions run out by their
   * TTL, since a limiter may still be admitting on them until its local deadline. Does not close
   * the injected client.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const idle = [...this.holders.values()].filter((h) => h.grants.size === 0 && h.condemned.size === 0 && h.inFlight === 0);
    for (const holder of idle) this.retire(holder);
    const deadline = Date.now() + 2000;
    await Promise.all(
      idle.map((h) => this.client.leaseClient.leaseRevoke({ ID: h.id }, { deadline }).catch(() => undefined)),
    );
  }

  /** One acquire transaction (per batch of candidates) on `holder`, with its keepalive and sweep. */
  private async acquireOn(
    holder: HolderLease,
    resource: string,
    keys: ReturnType<EtcdLeaseBackend["keys"]>,
    planText: string,
    candidates: readonly number[],
    holderId: string,
    ttlMs: number,
    startedAt: number,
    grpc: GrpcOptions,
    signal: AbortSignal,
  ): Promise<AcquireOutcome> {
    const token = makeToken(holder.id, holder.ttlSeconds, randomUUID());
    const value = grantValue(token, holderId);
    // A lease granted after this call started lives a full TTL; an older one must be extended, or a
    // key attached now could expire before `startedAt + ttl`.
    const fresh = holder.grantSentAt >= startedAt;
    const refresh = fresh ? Promise.resolve(holder.ttlSeconds) : this.keepAlive(holder.id, grpc, signal);
    refresh.catch(() => undefined);
    const sweep = this.sweep(holder, holder.staleGrants(startedAt), grpc);
    let response: ITxnResponse | null = null;
    let taken: number | null = null;
    try {
      for (let from = 0; from < candidates.length && taken === null; from += CANDIDATES_PER_TXN) {
        const batch = candidates.slice(from, from + CANDIDATES_PER_TXN);
        const attempt = this.client.kv.txn(acquireTxn(keys, planText, batch, value, holder.id), grpc);
        // If the reply is lost the put may have happened: condemn every key it could have taken.
        attempt.catch((error: unknown) => {
          if (!isLeaseNotFound(error)) for (const p of batch) holder.condemn(keys.partition(p), value);
        });
        response = await attempt;
        if (!response.succeeded) break;
        const index = takenIndex(response);
        if (index !== null) taken = batch[index] ?? null;
      }
    } catch (error) {
      await sweep;
      if (isLeaseNotFound(error)) {
        this.retire(holder);
        return { kind: "lease-gone" };
      }
      throw error;
    }
    if (!response) return { kind: "none" };
    if (!response.succeeded) {
      await sweep;
      const planKv = response.responses[0]?.response_range?.kvs[0];
      if (!planKv) return { kind: "plan-missing" };
      const storedText = planKv.value.toString();
      if (storedText !== planText) {
        this.cachePlan(resource, storedText);
        return { kind: "plan-changed" };
      }
      return { kind: "none" }; // the grace key exists
    }
    let ttl: number;
    try {
      [ttl] = await Promise.all([refresh, sweep]);
    } catch (error) {
      if (taken !== null) holder.condemn(keys.partition(taken), value);
      throw error;
    }
    if (ttl <= 0) {
      // The lease expired around our put: the key went with it (or goes now). Start over.
      this.retire(holder);
      return { kind: "lease-gone" };
    }
    if (taken === null) return { kind: "none" };
    const key = keys.partition(taken);
    holder.track(key, value, ttlMs, startedAt);
    return {
      kind: "granted",
      lease: { resource, partition: taken, holderId, token, fencingToken: Number(response.header.revision) },
    };
  }

  /** The holder lease for (holderId, ttlSeconds), granting one if none is known. */
  private async holderLease(holderId: string, ttlSeconds: number, grpc: GrpcOptions): Promise<HolderLease> {
    const id = `${ttlSeconds} ${holderId}`;
    const known = this.holders.get(id);
    if (known && !known.retired) return known;
    let pending = this.granting.get(id);
    if (!pending) {
      const sentAt = performance.now();
      pending = this.client.leaseClient.leaseGrant({ TTL: ttlSeconds }, grpc).then((granted) => {
        const holder = new HolderLease(String(granted.ID), ttlSeconds, sentAt);
        if (!this.closed) {
          this.holders.set(id, holder);
          this.byId.set(holder.id, holder);
        }
        return holder;
      });
      const settle = () => {
        if (this.granting.get(id) === pending) this.granting.delete(id);
      };
      pending.then(settle, settle);
      this.granting.set(id, pending);
    }
    return pending;
  }

  /** Forgets `holder`: no new key is attached to it. */
  private retire(holder: HolderLease): void {
    holder.retired = true;
    for (const [id, known] of this.holders) if (known === holder) this.holders.delete(id);
    if (this.byId.get(holder.id) === holder) this.byId.delete(holder.id);
  }

  /** Deletes condemned keys that still hold their values, in one transaction per 100; never throws. */
  private async sweep(holder: HolderLease | undefined, pairs: readonly Condemned[], grpc: GrpcOptions): Promise<void> {
    if (!holder || pairs.length === 0) return;
    for (let from = 0; from < pairs.length; from += SWEEP_BATCH) {
      const batch = pairs.slice(from, from + SWEEP_BATCH);
      try {
        await this.client.kv.txn(
          {
            compare: [],
            success: batch.map((pair) => ({
              request_txn: {
                compare: [valueIs(pair.key, pair.value)],
                success: [{ request_delete_range: { key: Buffer.from(pair.key) } }],
                failure: [],
              },
            })),
            failure: [],
          },
          grpc,
        );
        holder.acquit(batch);
      } catch {
        return; // Kept condemned; the next renewal or acquire on this lease tries again.
      }
    }
  }

  /**
   * Sends one keepalive for etcd lease `id` and resolves to its TTL in seconds, 0 or less when
   * the lease no longer exists.
   */
  private async keepAlive(id: string, grpc: GrpcOptions, signal: AbortSignal): Promise<number> {
    const stream: IDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse> = await this.client.leaseClient.leaseKeepAlive(grpc);
    return new Promise<number>((resolve, reject) => {
      let done = false;
      const finish = (fn: () => void) => {
        if (done) return;
        done = true;
        signal.removeEventListener("abort", onAbort);
        fn();
      };
      const onAbort = () => {
        finish(() => reject(signal.reason));
        stream.cancel();
      };
      if (signal.aborted) return onAbort();
      signal.addEventListener("abort", onAbort, { once: true });
      stream.on("data", (response) => {
        finish(() => resolve(Number(response.TTL)));
        stream.end();
      });
      stream.on("error", (error) => finish(() => reject(error)));
      stream.on("end", () => finish(() => reject(new Error("keepalive stream ended without a reply"))));
      stream.write({ ID: id });
    });
  }

  private async get(key: string, grpc: GrpcOptions): Promise<IKeyValue | null> {
    const response = await this.client.kv.range({ key: Buffer.from(key) }, grpc);
    return response.kvs[0] ?? null;
  }

  private verifyPlan(resource: string, storedText: string, wanted: string): void {
    const stored = this.cachePlan(resource, storedText);
    if (!stored || canonicalPlan(stored) !== wanted) throw new PlanMismatchError(resource, storedText, wanted);
  }

  private cachePlan(resource: string, text: string): Plan | null {
    const plan = parsePlan(text);
    if (plan) this.plans.set(resource, { text, plan });
    else this.plans.delete(resource);
    return plan;
  }

  private keys(resource: string): ResourceKeys & { partition(n: number): string } {
    resourceName("resource", resource);
    const base = `${this.prefix}${resource}/`;
    const partitions = `${base}p/`;
    return { base, plan: `${base}plan`, grace: `${base}grace`, partitions, partition: (n) => `${partitions}${n}` };
  }

  /**
   * Runs `operation` under the caller's signal and timeout: the timeout also becomes the gRPC
   * deadline, so the etcd3 client's own retries stop with it. Server failures become BackendError.
   */
  private call<T>(operation: Operation, opts: CallOptions, fn: (grpc: GrpcOptions, signal: AbortSignal) => Promise<T>): Promise<T> {
    return withDeadline(`etcd backend ${operation}`, opts, async (signal) => {
      if (this.closed) throw new BackendError(this.name, operation, new Error("the backend is closed"));
      // gRPC deadlines are wall-clock instants; they only bound transport, never a lease.
      // The slack lets our own timer win the race, so a timeout is reported as a TimeoutError.
      const grpc = { deadline: Date.now() + Math.max(0, opts.timeoutMs ?? DEFAULT_DEADLINE_MS) + DEADLINE_SLACK_MS };
      try {
        return await fn(grpc, signal);
      } catch (error) {
        if (signal.aborted) throw signal.reason;
        if (PartitionedRateLimiterError.isError(error)) throw error;
        throw new BackendError(this.name, operation, error);
      }
    });
  }
}

type AcquireOutcome =
  | { kind: "granted"; lease: Lease }
  | { kind: "none" }
  | { kind: "plan-missing" }
  | { kind: "plan-changed" }
  | { kind: "lease-gone" };

/** Converts a lease TTL in ms to etcd's whole seconds, or throws ConfigError naming `leaseTtlMs`. */
function leaseTtlSeconds(ttlMs: number): number {
  if (typeof ttlMs !== "number" || !Number.isInteger(ttlMs) || ttlMs < 2000 || ttlMs % 1000 !== 0 || ttlMs > 9_000_000_000_000) {
    throw new ConfigError(
      "leaseTtlMs",
      ttlMs,
      "a whole number of seconds in ms, at least 2000 (etcd lease TTLs are whole seconds, minimum 2 s)",
    );
  }
  return ttlMs / 1000;
}

/** The value of a partition key: the grant's token and its holder. */
function grantValue(token: string, holderId: string): string {
  return `${token} ${holderId}`;
}

/**
 * The acquire transaction: if the plan is still `planText` and no grace key exists, take the first
 * candidate whose key does not exist (one nested transaction per candidate); otherwise return the
 * plan and the grace key, so the caller can tell why.
 */
function acquireTxn(keys: ResourceKeys & { partition(n: number): string }, planText: string, candidates: readonly number[], value: string, leaseId: string): ITxnRequest {
  let chain: IRequestOp[] = [];
  for (let i = candidates.length - 1; i >= 0; i--) {
    const key = keys.partition(candidates[i] ?? -1);
    chain = [
      {
        request_txn: {
          compare: [createRevisionIs(key, 0)],
          success: [{ request_put: { key: Buffer.from(key), value: Buffer.from(value), lease: leaseId } }],
          failure: chain,
        },
      },
    ];
  }
  return {
    compare: [valueIs(keys.plan, planText), createRevisionIs(keys.grace, 0)],
    success: chain,
    failure: [{ request_range: { key: Buffer.from(keys.plan) } }, { request_range: { key: Buffer.from(keys.grace) } }],
  };
}

/** Which candidate (by index in the batch) the acquire transaction took, or null for none. */
function takenIndex(response: ITxnResponse): number | null {
  let level: ITxnResponse | undefined = response.responses[0]?.response_txn;
  for (let index = 0; level; index++) {
    if (level.succeeded) return index;
    level = level.responses[0]?.response_txn;
  }
  return null;
}

function createRevisionIs(key: string, revision: number): ICompare {
  return { key: Buffer.from(key), target: "Create", result: "Equal", create_revision: revision };
}

function valueIs(key: string, value: string): ICompare {
  return { key: Buffer.from(key), target: "Value", result: "Equal", value: Buffer.from(value) };
}

/** The end of the key range holding every key that starts with `prefix`. */
function prefixEnd(prefix: string): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if ((end[i] ?? 0xff) < 0xff) {
      end[i] = (end[i] ?? 0) + 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

/** Whether `error` is etcd's "requested lease not found" (the lease expired, was revoked, or the server lost it). */
function isLeaseNotFound(error: unknown): boolean {
  return error instanceof Error && /requested lease not found/i.test(error.message);
}
