import { randomUUID } from "node:crypto";
import { BackendError } from "../errors/backend-error.js";
import { ConfigError } from "../errors/config-error.js";
import { PartitionedRateLimiterError } from "../errors/partitioned-rate-limiter-error.js";
import { PlanMismatchError } from "../errors/plan-mismatch-error.js";
import { PlanMissingError } from "../errors/plan-missing-error.js";
import { systemClock } from "../contract/clock.js";
import { canonicalPlan, parsePlan, partitionPools, type Plan } from "../contract/plan.js";
import { optionalNumber } from "../contract/validate.js";
import { withDeadline } from "./call-deadline.js";
import type { CallOptions, EnsurePlanOptions, Lease, LeaseBackend, PartitionState } from "../contract/lease-backend.js";
import { failures, noQuorum, quorumOf, runRound, type RoundState } from "./quorum.js";
import { checkRedisClient, whenReady } from "./redis-client.js";
import {
  parseAcquireReply,
  parseEnsurePlanReply,
  parseInspectReply,
  resourceKeys,
  scripts,
  serverTtl,
  tokenPrefix,
  type AcquireReply,
  type InspectReply,
  type RedisClient,
  type ResourceKeys,
} from "./redis-scripts.js";

/** Options of {@link RedlockLeaseBackend}. */
export interface RedlockLeaseBackendOptions {
  /**
   * Three or more ioredis clients of independent Redis servers (not replicas of one another),
   * each created with `enableOfflineQueue: false` (checked), a small `maxRetriesPerRequest` and a
   * `commandTimeout`. The backend never closes them.
   */
  clients: readonly RedisClient[];
  /**
   * The share of the TTL reserved for clock drift between servers (default 0.01, allowed 0 to
   * 0.2). A grant counts only if a quorum granted it within `ttl × (1 − driftFactor) − 2 ms` of
   * sending, measured on the monotonic clock. Use the same value as the limiter's `driftFactor`.
   */
  driftFactor?: number;
  /**
   * How many more rounds one `tryAcquire` runs at once when servers granted different partitions
   * and none reached a quorum (default 2, allowed 0 to 10). Never used when everything is taken:
   * then tryAcquire resolves null and the limiter backs off.
   */
  retryCount?: number;
  /** Prepended to every key (default `"prl:"`), as in RedisLeaseBackend. */
  keyPrefix?: string;
}

type AcquireOutcome =
  | { kind: "granted"; partition: number }
  | { kind: "none" }
  | { kind: "split" }
  | { kind: "missing" }
  | { kind: "error"; error: Error };

/** How long the ensurePlan and inspect rounds wait for stragglers once a quorum has answered, in ms. */
const READ_SETTLE_MS = 100;

/**
 * RedlockLeaseBackend spreads every lease over three or more independent Redis servers and
 * counts it only when a majority (`floor(n/2)+1`) granted it, so one server's crash, pause or
 * loss of state neither blocks the limiter nor lets two holders share a partition.
 *
 * It implements the Redlock quorum itself, with the same Lua scripts as RedisLeaseBackend,
 * rather than through the `redlock` package: that package locks a fixed set of resources (not
 * "the first free of these candidates"), retries with sleeps it cannot abort, computes validity
 * from the wall clock and has no per-call timeout. Here a round sends one script to every server
 * at once and decides as soon as the answers in hand decide, so a stalled minority costs nothing.
 *
 * - `tryAcquire`: every server takes the first free candidate in the caller's order; the lease is
 *   the partition a quorum agreed on, within `ttl × (1 − driftFactor)` of sending on the monotonic
 *   clock. Grants of other partitions, late grants and grants of a failed round are released
 *   where they were taken. Fencing tokens are `null`: per-server counters cannot give one number
 *   that grows with every grant.
 * - `renew` needs a quorum within the same validity; `release` is sent to every server.
 * - `ensurePlan` stores the plan (and its grace period) on every server that lacks it, needs a
 *   quorum, and rejects with PlanMismatchError if any server that answers (within 100 ms of the
 *   quorum) holds another plan. A server that
 *   lost its state answers `tryAcquire` with "no plan": the call rejects with PlanMissingError
 *   (also on the next call when the answer came after the decision), the limiter calls
 *   `ensurePlan`, and that server grants nothing during its grace period.
 * - `readPlan` and `inspect` report what a quorum agrees on.
 */
export class RedlockLeaseBackend implements LeaseBackend {
  /** `"redlock"`. */
  readonly name = "redlock";
  private readonly clients: readonly RedisClient[];
  private readonly driftFactor: number;
  private readonly retryCount: number;
  private readonly keyPrefix: string;
  private readonly quorum: number;
  /** Resources a server reported without a plan after the round had been decided. */
  private readonly planMissingOnSome = new Set<string>();

  /** Creates a backend over `options.clients`; throws ConfigError for fewer than three or unsuitable clients. */
  constructor(options: RedlockLeaseBackendOptions) {
    const clients: unknown = options?.clients;
    if (!Array.isArray(clients) || clients.length < 3) {
      throw new ConfigError("clients", clients, "an array of at least 3 ioredis clients of independent Redis servers");
    }
    this.clients = clients.map((c: unknown, i) => checkRedisClient(`clients[${i}]`, c));
    if (new Set(this.clients).size !== this.clients.length) {
      throw new ConfigError("clients", clients, "distinct clients (one per independent Redis server)");
    }
    this.driftFactor = optionalNumber("driftFactor", options.driftFactor, 0.01, { min: 0, max: 0.2 });
    this.retryCount = optionalNumber("retryCount", options.retryCount, 2, { min: 0, max: 10, integer: true });
    const keyPrefix = options.keyPrefix ?? "prl:";
    if (typeof keyPrefix !== "string" || /[{}]/.test(keyPrefix)) {
      throw new ConfigError("keyPrefix", keyPrefix, "a string without { or } (they would break the hash tag)");
    }
    this.keyPrefix = keyPrefix;
    this.quorum = quorumOf(this.clients.length);
  }

  async ensurePlan(resource: string, plan: Plan, opts: EnsurePlanOptions): Promise<void> {
    const wanted = canonicalPlan(plan);
    const keys = this.keys(resource);
    const graceMs = Math.max(0, Math.ceil(opts.graceMs));
    await this.call("ensurePlan", opts, (signal) =>
      runRound(
        this.clients.length,
        (i) => this.run(i, signal, async (c) => parseEnsurePlanReply(await scripts.ensurePlan.run(c, [keys.plan, keys.grace, keys.fence], [wanted, graceMs]))),
        (state) => {
          let ok = 0;
          for (const vote of state.votes) {
            if (!vote.ok) continue;
            if (!vote.value.created) {
              const stored = parsePlan(vote.value.stored);
              if (!stored || canonicalPlan(stored) !== wanted) throw new PlanMismatchError(resource, vote.value.stored, wanted);
            }
            ok++;
          }
          if (ok + state.pending < state.quorum) throw noQuorum(state, this.clients.length);
          // Waits for every server (or the settle time) so that a differing plan anywhere is seen.
          return state.final ? true : undefined;
        },
        READ_SETTLE_MS,
      ),
    );
    this.planMissingOnSome.delete(resource);
  }

  async readPlan(resource: string, opts: CallOptions): Promise<Plan | null> {
    const key = this.keys(resource).plan;
    const stored = await this.call("readPlan", opts, (signal) =>
      runRound(
        this.clients.length,
        (i) => this.run(i, signal, (c) => c.get(key)),
        (state) => agreed(state, this.clients.length, (v) => v),
      ),
    );
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
    const valid = candidates.filter((p) => Number.isSafeInteger(p) && p >= 0);
    return this.call("tryAcquire", opts, async (signal) => {
      if (this.planMissingOnSome.has(resource)) throw new PlanMissingError(resource);
      for (let attempt = 0; ; attempt++) {
        const token = randomUUID();
        const outcome = await this.acquireRound(resource, valid, holderId, ttl, token, signal);
        switch (outcome.kind) {
          case "granted":
            return { resource, partition: outcome.partition, holderId, token, fencingToken: null };
          case "missing":
            throw new PlanMissingError(resource);
          case "error":
            throw outcome.error;
          case "none":
            return null;
          case "split":
            if (attempt >= this.retryCount || signal.aborted) return null;
        }
      }
    });
  }

  async renew(lease: Lease, ttlMs: number, opts: CallOptions): Promise<boolean> {
    const ttl = serverTtl(ttlMs);
    const key = this.keys(lease.resource).partitionBase + lease.partition;
    const args = [tokenPrefix(lease.token), ttl];
    const started = systemClock.now();
    return this.call("renew", opts, (signal) =>
      runRound(
        this.clients.length,
        (i) => this.run(i, signal, (c) => scripts.renew.run(c, [key], args)),
        (state) => {
          const extended = state.votes.filter((v) => v.ok && v.value === 1).length;
          const refused = state.votes.filter((v) => v.ok && v.value !== 1).length;
          if (extended >= state.quorum) return this.withinValidity(started, ttl);
          if (refused > this.clients.length - state.quorum) return false;
          if (extended + state.pending < state.quorum) throw noQuorum(state, this.clients.length);
          return undefined;
        },
      ),
    );
  }

  async release(lease: Lease, opts: CallOptions): Promise<void> {
    const key = this.keys(lease.resource).partitionBase + lease.partition;
    const args = [tokenPrefix(lease.token)];
    await this.call("release", opts, (signal) =>
      runRound(
        this.clients.length,
        (i) => this.run(i, signal, (c) => scripts.release.run(c, [key], args)),
        (state) => {
          const ok = state.votes.filter((v) => v.ok).length;
          if (ok + state.pending < state.quorum) throw noQuorum(state, this.clients.length);
          // Every server gets the release; the call need not wait for a stalled minority.
          return state.pending === 0 || ok >= state.quorum ? true : undefined;
        },
      ),
    );
  }

  async inspect(resource: string, opts: CallOptions): Promise<PartitionState[]> {
    const keys = this.keys(resource);
    const replies = await this.call("inspect", opts, (signal) =>
      runRound(
        this.clients.length,
        (i) => this.run(i, signal, async (c) => parseInspectReply(await scripts.inspect.run(c, [keys.plan], [keys.partitionBase]))),
        (state) => {
          const answered = state.votes.flatMap((v) => (v.ok ? [v.value] : []));
          if (answered.length + state.pending < state.quorum) throw noQuorum(state, this.clients.length);
          return state.final ? answered : undefined;
        },
        READ_SETTLE_MS,
      ),
    );
    return this.combineInspect(replies);
  }

  /** Does nothing: the injected clients are the caller's to close. */
  async close(): Promise<void> {}

  private async acquireRound(
    resource: string,
    candidates: readonly number[],
    holderId: string,
    ttl: number,
    token: string,
    signal: AbortSignal,
  ): Promise<AcquireOutcome> {
    const keys = this.keys(resource);
    const keyList = [keys.plan, keys.grace, keys.fence, ...candidates.map((p) => keys.partitionBase + p)];
    const args = [token, holderId, ttl, ...candidates];
    const started = systemClock.now();
    // undefined while deciding, then the partition kept (or null: keep nothing).
    let kept: number | null | undefined;
    const granted = new Map<number, number>();
    const undo = (server: number, partition: number) => {
      const client = this.clients[server];
      if (client) scripts.release.run(client, [keys.partitionBase + partition], [tokenPrefix(token)]).catch(() => undefined);
    };
    const decideKept = (partition: number | null) => {
      kept = partition;
      for (const [server, p] of granted) if (p !== partition) undo(server, p);
    };
    // A caller that gives up mid-round must not leave grants behind.
    const onAbort = () => {
      if (kept === undefined) decideKept(null);
    };
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      return await runRound<AcquireReply, AcquireOutcome>(
        this.clients.length,
        (i) =>
          this.run(i, signal, async (c) => {
            const reply = parseAcquireReply(await scripts.acquire.run(c, keyList, args));
            if (reply.kind === "missing" && kept !== undefined) this.planMissingOnSome.add(resource);
            if (reply.kind === "granted") {
              if (kept === undefined) granted.set(i, reply.partition);
              else if (kept !== reply.partition) undo(i, reply.partition);
            }
            return reply;
          }),
        (state) => {
          if (kept !== undefined) return { kind: "none" };
          const outcome = this.decideAcquire(state, started, ttl);
          if (outcome) decideKept(outcome.kind === "granted" ? outcome.partition : null);
          return outcome;
        },
      );
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }

  private decideAcquire(state: RoundState<AcquireReply>, started: number, ttl: number): AcquireOutcome | undefined {
    const votes = new Map<number, number>();
    let grants = 0;
    for (const vote of state.votes) {
      if (!vote.ok) continue;
      if (vote.value.kind === "missing") return { kind: "missing" };
      if (vote.value.kind === "granted") {
        grants++;
        votes.set(vote.value.partition, (votes.get(vote.value.partition) ?? 0) + 1);
      }
    }
    let best = 0;
    for (const [partition, count] of votes) {
      if (count >= state.quorum) {
        return this.withinValidity(started, ttl) ? { kind: "granted", partition } : { kind: "none" };
      }
      best = Math.max(best, count);
    }
    if (best + state.pending >= state.quorum) return undefined;
    if (failures(state.votes).length > this.clients.length - state.quorum) {
      return { kind: "error", error: noQuorum(state, this.clients.length) };
    }
    return grants > 0 ? { kind: "split" } : { kind: "none" };
  }

  /** Whether a quorum reached now still leaves the lease valid: Redlock's validity rule, on the monotonic clock. */
  private withinValidity(started: number, ttl: number): boolean {
    return systemClock.now() - started < ttl * (1 - this.driftFactor) - 2;
  }

  private combineInspect(replies: readonly (InspectReply | null)[]): PartitionState[] {
    const planText = majority(replies.map((r) => r?.plan ?? null), this.quorum);
    const plan = planText ? parsePlan(planText) : null;
    if (!plan) return [];
    return partitionPools(plan).map((pool, partition) => {
      const byToken = new Map<string, { holderId: string; ttls: number[] }>();
      for (const reply of replies) {
        if (!reply || reply.plan !== planText) continue;
        const seen = reply.partitions[partition];
        if (!seen?.grant) continue;
        const entry = byToken.get(seen.grant.token) ?? { holderId: seen.grant.holderId, ttls: [] };
        entry.ttls.push(seen.pttlMs ?? 0);
        byToken.set(seen.grant.token, entry);
      }
      for (const entry of byToken.values()) {
        if (entry.ttls.length < this.quorum) continue;
        // The lease holds while a quorum still has it: until the quorum-th longest TTL runs out.
        const sorted = entry.ttls.sort((a, b) => b - a);
        return { partition, pool, holderId: entry.holderId, expiresInMs: sorted[this.quorum - 1] ?? null, fencingToken: null };
      }
      return { partition, pool, holderId: null, expiresInMs: null, fencingToken: null };
    });
  }

  private keys(resource: string): ResourceKeys {
    return resourceKeys(this.keyPrefix, resource);
  }

  /** Runs `command` on server `index` once its client is connected. */
  private async run<T>(index: number, signal: AbortSignal, command: (client: RedisClient) => Promise<T>): Promise<T> {
    const client = this.clients[index];
    if (!client) throw new Error(`no client ${index}`);
    await whenReady(client, signal);
    return command(client);
  }

  private call<T>(operation: string, opts: CallOptions, round: (signal: AbortSignal) => Promise<T>): Promise<T> {
    return withDeadline(`redlock backend ${operation}`, opts, async (signal) => {
      try {
        return await round(signal);
      } catch (error) {
        if (signal.aborted) throw signal.reason;
        if (PartitionedRateLimiterError.isError(error)) throw error;
        throw new BackendError(this.name, operation, error);
      }
    });
  }
}

/** The value at least `quorum` entries share; undefined when none does. */
function majority<V>(values: readonly V[], quorum: number): V | undefined {
  const counts = new Map<V, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  for (const [v, count] of counts) if (count >= quorum) return v;
  return undefined;
}

/** Decides a read round: the value a quorum of servers answered, or an error when none can. */
function agreed<T, V>(state: RoundState<T>, servers: number, key: (value: T) => V): V | undefined {
  const values = state.votes.flatMap((v) => (v.ok ? [key(v.value)] : []));
  const counts = new Map<V, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  let best = 0;
  for (const [v, count] of counts) {
    if (count >= state.quorum) return v;
    best = Math.max(best, count);
  }
  if (best + state.pending < state.quorum) throw noQuorum(state, servers, " (servers disagree or fail)");
  return undefined;
}
