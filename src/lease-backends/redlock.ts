import { randomUUID } from "node:crypto";
import { ConfigError } from "../errors/config-error.js";
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
import { encodeStoredPlan, storedPlanBody, storedPlanOrThrow, validatePlan, type Plan, type StoredPlan } from "../contract/plan.js";
import { MAX_LEASE_TTL_MS, creationGraceMs, deletionGraceMs } from "../contract/timing.js";
import { optionalNumber } from "../contract/validate.js";
import { backendCall } from "./backend-call.js";
import { failures, noQuorum, quorumOf, runRound, type RoundState, type Vote } from "./quorum.js";
import { checkRedisClient, describeRedisFailure, whenReady } from "./redis-client.js";
import { checkExpectedEpoch, inspectedState, planKeys, readableOrNull, renewable, replacementGraceMs } from "./redis.js";
import { toPublishedHolders } from "./redis-records.js";
import {
  parseAcquireReply,
  parseHeartbeatReply,
  parseInspectReply,
  parsePlanWriteReply,
  resourceKeys,
  scripts,
  tokenPrefix,
  type AcquireReply,
  type HeartbeatReply,
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
   * How many more rounds one `tryAcquire` runs at once when servers granted different partitions
   * and none reached a quorum (default 2, allowed 0 to 10). Never used when everything is taken:
   * then tryAcquire answers "taken" and the limiter backs off.
   */
  retryCount?: number;
  /** Prepended to every key (default `"prl:"`), as in RedisLeaseBackend. */
  keyPrefix?: string;
}

type AcquireOutcome = AcquireResult | { kind: "split" } | { kind: "missing" } | { kind: "error"; error: Error };

/** How long reads wait for stragglers once a quorum has answered, in ms. */
const READ_SETTLE_MS = 100;

/**
 * RedlockLeaseBackend spreads every lease over three or more independent Redis servers and
 * counts it only when a majority (`floor(n/2)+1`) granted it, so one server's crash, pause, loss
 * of state or restore from an old snapshot neither blocks the limiter nor lets two holders share
 * a partition. It runs the Redis backend's Lua scripts on every server in parallel and decides as
 * soon as the answers in hand decide, so a stalled minority costs nothing.
 *
 * - `tryAcquire`: every server takes the first free candidate in the caller's order; the lease is
 *   the partition a quorum agreed on. Grants of other partitions, and grants of a failed round,
 *   are released where they were taken. Fencing tokens are `null`: per-server counters cannot
 *   give one number that grows with every grant.
 * - `heartbeat`: a lease is renewed when a quorum extended it. The limiter's local deadline (from
 *   the send time, minus a margin that covers the plan's `driftFactor`) already bounds the earliest
 *   expiry of a quorum, so there is no second validity rule here.
 * - Plans: a quorum decides; a server whose stored plan differs from the majority's (it lost its
 *   state and had the plan stored again, or missed a replacement) is brought to the majority's
 *   exact plan and epoch by `ensurePlan`, with a grace on that server.
 * - Each server checks its own identity (`run_id`) in every script, as RedisLeaseBackend does: a
 *   server restored from a snapshot starts its own grace.
 * - Holder records are read from the lowest-numbered server that answered (they are advice for
 *   fair sharing, not part of the safety argument).
 */
export class RedlockLeaseBackend implements LeaseBackend {
  /** `"redlock"`. */
  readonly name = "redlock";
  /** Each server keeps absolute expiries, as RedisLeaseBackend. */
  readonly revivesExpiredLeases = false;
  /** Any whole-ms TTL up to the library's maximum. */
  readonly leaseTtlRule: LeaseTtlRule = { minMs: 1, maxMs: MAX_LEASE_TTL_MS, stepMs: 1, reason: "Redis PX expiries have ms resolution" };
  private readonly clients: readonly RedisClient[];
  private readonly retryCount: number;
  private readonly keyPrefix: string;
  private readonly quorum: number;
  /** Resources where a server's plan disagrees with the majority: the next tryAcquire asks for ensurePlan, which repairs it. */
  private readonly needsRepair = new Set<string>();

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
    if ((options as { driftFactor?: unknown }).driftFactor !== undefined) {
      throw new ConfigError("driftFactor", (options as { driftFactor?: unknown }).driftFactor, "no value here: the clock drift is the plan's driftFactor, set on the limiter");
    }
    this.retryCount = optionalNumber("retryCount", options.retryCount, 2, { min: 0, max: 10, integer: true });
    const keyPrefix = options.keyPrefix ?? "prl:";
    if (typeof keyPrefix !== "string" || /[{}]/.test(keyPrefix)) {
      throw new ConfigError("keyPrefix", keyPrefix, "a string without { or } (they would break the hash tag)");
    }
    this.keyPrefix = keyPrefix;
    this.quorum = quorumOf(this.clients.length);
  }

  async ensurePlan(resource: string, plan: Plan, opts: EnsurePlanOptions): Promise<StoredPlan> {
    const wanted = validatePlan(plan, "plan.");
    const keys = this.keys(resource);
    const graceMs = creationGraceMs(wanted, opts.history ?? "unknown");
    return this.call("ensurePlan", opts, async (signal) => {
      const texts = await this.roundAll(signal, async (c) =>
        parsePlanWriteReply(await scripts.ensurePlan.run(c, planKeys(keys), [storedPlanBody(wanted), graceMs, wanted.partitions, keys.partitionBase]), "ensurePlan").text,
      );
      const majority = this.majorityText(texts);
      if (majority === undefined) throw noQuorum({ votes: texts, pending: 0, quorum: this.quorum, final: true }, this.clients.length, " (the servers store different plans)");
      const stored = storedPlanOrThrow(resource, majority);
      await this.repair(resource, keys, stored, texts, graceMs, signal);
      return stored;
    });
  }

  async readPlan(resource: string, opts: CallOptions): Promise<StoredPlan | null> {
    const key = this.keys(resource).plan;
    const text = await this.call("readPlan", opts, (signal) =>
      runRound<string | null, string | null>(
        this.clients.length,
        (i) => this.run(i, signal, (c) => c.get(key)),
        (state) => agreed(state, this.clients.length),
      ),
    );
    return text === null ? null : storedPlanOrThrow(resource, text);
  }

  async replacePlan(resource: string, plan: Plan, opts: CallOptions & { expectedEpoch?: number }): Promise<StoredPlan> {
    const wanted = validatePlan(plan, "plan.");
    const keys = this.keys(resource);
    return this.call("replacePlan", opts, async (signal) => {
      const texts = await this.roundAll(signal, async (c) => (await c.get(keys.plan)) ?? "");
      const majority = this.majorityText(texts);
      if (majority === undefined) throw noQuorum({ votes: texts, pending: 0, quorum: this.quorum, final: true }, this.clients.length, " (the servers store different plans)");
      // A majority text that cannot be read is replaced as if none were stored (that repairs it).
      const current = readableOrNull(majority);
      checkExpectedEpoch(resource, current, opts.expectedEpoch);
      const next: StoredPlan = { plan: wanted, epoch: (current?.epoch ?? 0) + 1 };
      const graceMs = replacementGraceMs(current, wanted);
      const written = await this.writeExact(keys, texts, next, graceMs, signal);
      if (written < this.quorum) throw new Error(`the plan was replaced on ${written} of ${this.clients.length} servers only (${this.quorum} needed); retry`);
      return next;
    });
  }

  async deletePlan(resource: string, opts: CallOptions): Promise<boolean> {
    const keys = this.keys(resource);
    return this.call("deletePlan", opts, async (signal) => {
      const texts = await this.roundAll(signal, async (c) => (await c.get(keys.plan)) ?? "");
      const majority = this.majorityText(texts);
      // Servers that store different plans: "there was none" would be false, and deleting the
      // plan of one server would not delete the resource's.
      if (majority === undefined) throw noQuorum({ votes: texts, pending: 0, quorum: this.quorum, final: true }, this.clients.length, " (the servers store different plans)");
      if (majority === "") return false;
      const current = storedPlanOrThrow(resource, majority);
      const deleted = await this.roundAll(signal, async (c, i) => {
        const vote = texts.find((v) => v.index === i);
        const text = vote?.ok ? vote.value : majority;
        if (text === "") return true;
        return parsePlanWriteReply(await scripts.deletePlan.run(c, planKeys(keys), [text, deletionGraceMs(current.plan)]), "deletePlan").done;
      });
      const count = deleted.filter((v) => v.ok && v.value).length;
      if (count < this.quorum) throw new Error(`the plan was deleted on ${count} of ${this.clients.length} servers only (${this.quorum} needed); retry`);
      return true;
    });
  }

  async tryAcquire(request: AcquireRequest, opts: CallOptions): Promise<AcquireResult> {
    const { resource, holderId } = request;
    const epoch = request.plan.epoch;
    const text = encodeStoredPlan(request.plan);
    const candidates = request.candidates.filter((p) => Number.isSafeInteger(p) && p >= 0);
    return this.call("tryAcquire", opts, async (signal) => {
      if (this.needsRepair.has(resource)) throw new PlanMissingError(resource);
      for (let attempt = 0; ; attempt++) {
        const token = randomUUID();
        const outcome = await this.acquireRound(resource, candidates, holderId, text, epoch, token, signal);
        switch (outcome.kind) {
          case "granted":
          case "taken":
          case "grace":
          case "plan-changed":
            return outcome;
          case "missing":
            throw new PlanMissingError(resource);
          case "error":
            throw outcome.error;
          case "split":
            if (attempt >= this.retryCount || signal.aborted) return { kind: "taken" };
        }
      }
    });
  }

  async heartbeat(request: HeartbeatRequest, opts: CallOptions): Promise<HeartbeatResult> {
    const { resource, leases } = request;
    const keys = this.keys(resource);
    const holder = validateHolderRecord(request.holder, request.plan.plan.partitions);
    // Leases of another resource or epoch are not sent, so no server extends them (see renewable).
    const sent = renewable(request);
    const keyList = [keys.plan, keys.server, keys.grace, keys.fence, keys.holders, ...sent.map((l) => keys.partitionBase + l.partition)];
    const args = [encodeStoredPlan(request.plan), holder.holderId, encodeHolderRecord(holder), ...sent.map((l) => tokenPrefix(l.token))];
    return this.call("heartbeat", opts, (signal) =>
      runRound<HeartbeatReply, HeartbeatResult>(
        this.clients.length,
        (i) => this.run(i, signal, async (c) => parseHeartbeatReply(await scripts.heartbeat.run(c, keyList, args))),
        (state) => {
          const answers = okValues(state.votes);
          if (answers.length + state.pending < state.quorum) throw noQuorum(state, this.clients.length);
          // Every lease is decided once a quorum extended it or too few can; wait for all otherwise.
          const renewed = leases.map((l) => {
            const i = sent.indexOf(l);
            return i >= 0 && answers.filter((a) => a.renewed[i]).length >= state.quorum;
          });
          const undecided = sent.some((_, i) => {
            const yes = answers.filter((a) => a.renewed[i]).length;
            return yes < state.quorum && yes + state.pending >= state.quorum;
          });
          if (undecided && !state.final) return undefined;
          const epochs = this.majorityOf(answers.map((a) => a.epoch));
          if (epochs === undefined && !state.final) return undefined;
          // The quorum-th smallest grace of the answers in hand bounds the true one from above; it
          // is exact once every server answered, so a running grace waits (at most the settle
          // time) for the rest: otherwise the grace reported would depend on who answered first.
          const graceMs = this.quorumGrace(answers.map((a) => a.graceMs));
          if (graceMs > 0 && !state.final) return undefined;
          const records = [...state.votes].filter((v): v is Extract<Vote<HeartbeatReply>, { ok: true }> => v.ok).sort((a, b) => a.index - b.index)[0]?.value.records ?? [];
          const samePlan = answers.filter((a) => a.samePlan).length >= state.quorum;
          return { renewed, samePlan, epoch: epochs ?? null, graceMs, holders: toPublishedHolders(records) };
        },
        // A stalled minority must not hold a heartbeat whose leases are decided but for it
        // longer than this (only while a grace runs, see above).
        READ_SETTLE_MS,
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

  async inspect(resource: string, opts: CallOptions): Promise<ResourceState> {
    const keys = this.keys(resource);
    return this.call("inspect", opts, async (signal) => {
      const votes = await runRound<InspectReply, Vote<InspectReply>[]>(
        this.clients.length,
        (i) => this.run(i, signal, async (c) => parseInspectReply(await scripts.inspect.run(c, [keys.plan, keys.grace, keys.holders], [keys.partitionBase]))),
        (state) => {
          if (okValues(state.votes).length + state.pending < state.quorum) throw noQuorum(state, this.clients.length);
          return state.final ? [...state.votes] : undefined;
        },
        READ_SETTLE_MS,
      );
      const replies = votes.filter((v): v is Extract<Vote<InspectReply>, { ok: true }> => v.ok).sort((a, b) => a.index - b.index).map((v) => v.value);
      const text = this.majorityOf(replies.map((r) => r.text)) ?? null;
      const base = replies.find((r) => r.text === text) ?? replies[0]!;
      const state = inspectedState(resource, { ...base, text, records: replies[0]?.records ?? [] });
      // A partition is held while a quorum holds the same grant: until the quorum-th longest TTL runs out.
      const partitions = state.partitions.map((p) => {
        const byToken = new Map<string, { holderId: string; epoch: number | null; ttls: number[] }>();
        for (const r of replies) {
          if (r.text !== text) continue;
          const seen = r.partitions[p.partition];
          if (!seen?.grant) continue;
          const entry = byToken.get(seen.grant.token) ?? { holderId: seen.grant.holderId, epoch: seen.grant.epoch, ttls: [] };
          entry.ttls.push(seen.pttlMs ?? 0);
          byToken.set(seen.grant.token, entry);
        }
        for (const entry of byToken.values()) {
          if (entry.ttls.length < this.quorum) continue;
          const sorted = entry.ttls.sort((a, b) => b - a);
          return { ...p, holderId: entry.holderId, expiresInMs: sorted[this.quorum - 1] ?? null, fencingToken: null, epoch: entry.epoch };
        }
        return { ...p, holderId: null, expiresInMs: null, fencingToken: null, epoch: null };
      });
      return { ...state, partitions, graceMs: this.quorumGrace(replies.map((r) => r.graceMs)) };
    });
  }

  /** Does nothing: the injected clients are the caller's to close. */
  async close(): Promise<void> {}

  private async acquireRound(
    resource: string,
    candidates: readonly number[],
    holderId: string,
    planText: string,
    epoch: number,
    token: string,
    signal: AbortSignal,
  ): Promise<AcquireOutcome> {
    const keys = this.keys(resource);
    const keyList = [keys.plan, keys.server, keys.grace, keys.fence, ...candidates.map((p) => keys.partitionBase + p)];
    const args = [token, holderId, planText, ...candidates];
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
            if (reply.kind === "granted") {
              if (kept === undefined) granted.set(i, reply.partition);
              else if (kept !== reply.partition) undo(i, reply.partition);
            }
            return reply;
          }),
        (state) => {
          if (kept !== undefined) return { kind: "taken" };
          const outcome = this.decideAcquire(resource, state, epoch);
          if (outcome) decideKept(outcome.kind === "granted" ? outcome.lease.partition : null);
          return outcome === undefined ? undefined : outcome.kind === "granted" ? { kind: "granted", lease: { ...outcome.lease, token, holderId } } : outcome;
        },
      );
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }

  private decideAcquire(resource: string, state: RoundState<AcquireReply>, epoch: number): AcquireOutcome | undefined {
    const answers = okValues(state.votes);
    const votes = new Map<number, number>();
    const graces: number[] = [];
    const epochs: number[] = [];
    let grants = 0;
    for (const reply of answers) {
      switch (reply.kind) {
        case "missing":
        case "unreadable":
          // A server without this plan grants nothing; ensurePlan stores it there (or repairs it).
          this.needsRepair.add(resource);
          break;
        case "epoch":
          epochs.push(reply.epoch);
          break;
        case "grace":
          graces.push(reply.remainingMs);
          break;
        case "granted":
          grants++;
          votes.set(reply.partition, (votes.get(reply.partition) ?? 0) + 1);
          break;
        case "taken":
          break;
      }
    }
    for (const [partition, count] of votes) {
      if (count >= state.quorum) {
        return { kind: "granted", lease: { resource, partition, holderId: "", token: "", fencingToken: null, epoch } };
      }
    }
    const best = Math.max(0, ...votes.values());
    if (best + state.pending >= state.quorum) return undefined;
    if (failures(state.votes).length > this.clients.length - state.quorum) {
      return { kind: "error", error: noQuorum(state, this.clients.length) };
    }
    const newer = this.majorityOf(epochs);
    if (newer !== undefined) return { kind: "plan-changed", epoch: newer };
    if (epochs.length > 0) this.needsRepair.add(resource);
    const missing = answers.filter((a) => a.kind === "missing").length;
    if (missing >= state.quorum) return { kind: "missing" };
    if (graces.length > this.clients.length - state.quorum) {
      // Decided before every server answered: the others may be out of grace, so they count as 0
      // (an earlier retry, never a grant: each server enforces its own grace).
      return { kind: "grace", remainingMs: this.quorumGrace(graces.concat(Array<number>(this.clients.length - graces.length).fill(0))) };
    }
    return grants > 0 ? { kind: "split" } : { kind: "taken" };
  }

  /**
   * Brings every server whose stored plan differs from `stored` (it lost its state, or missed a
   * replacement) to exactly that plan and epoch, with a grace on that server.
   */
  private async repair(resource: string, keys: ResourceKeys, stored: StoredPlan, texts: readonly Vote<string>[], graceMs: number, signal: AbortSignal): Promise<void> {
    const wanted = encodeStoredPlan(stored);
    if (texts.every((v) => !v.ok || v.value === wanted)) {
      this.needsRepair.delete(resource);
      return;
    }
    await this.writeExact(keys, texts, stored, Math.max(graceMs, stored.plan.leaseTtlMs), signal, true);
    this.needsRepair.delete(resource);
  }

  /** Writes `next` with its exact epoch on every server (compare and set against what each stored); resolves how many took it. */
  private async writeExact(keys: ResourceKeys, texts: readonly Vote<string>[], next: StoredPlan, graceMs: number, signal: AbortSignal, onlyDiffering = false): Promise<number> {
    const wanted = encodeStoredPlan(next);
    const results = await this.roundAll(signal, async (c, i) => {
      const vote = texts.find((v) => v.index === i);
      if (!vote?.ok) return false;
      if (onlyDiffering && vote.value === wanted) return true;
      const reply = parsePlanWriteReply(await scripts.replacePlan.run(c, planKeys(keys), [vote.value, storedPlanBody(next.plan), graceMs, next.epoch]), "replacePlan");
      return reply.done;
    });
    return results.filter((v) => v.ok && v.value).length;
  }

  /** Runs `command` on every server and waits for every answer (errors included); fails without a quorum of answers. */
  private async roundAll<T>(signal: AbortSignal, command: (client: RedisClient, index: number) => Promise<T>): Promise<Vote<T>[]> {
    return runRound<T, Vote<T>[]>(
      this.clients.length,
      (i) => this.run(i, signal, (c) => command(c, i)),
      (state) => {
        if (okValues(state.votes).length + state.pending < state.quorum) throw noQuorum(state, this.clients.length);
        return state.final ? [...state.votes] : undefined;
      },
      READ_SETTLE_MS,
    );
  }

  /** The text a quorum of answers shares; undefined when none does. */
  private majorityText(votes: readonly Vote<string>[]): string | undefined {
    return this.majorityOf(okValues(votes));
  }

  private majorityOf<V>(values: readonly V[]): V | undefined {
    const counts = new Map<V, number>();
    for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
    for (const [v, count] of counts) if (count >= this.quorum) return v;
    return undefined;
  }

  /** How long until a quorum of servers is out of grace: the quorum-th smallest remaining grace. */
  private quorumGrace(graces: readonly number[]): number {
    const sorted = [...graces].sort((a, b) => a - b);
    return sorted[this.quorum - 1] ?? 0;
  }

  private keys(resource: string): ResourceKeys {
    return resourceKeys(this.keyPrefix, resource);
  }

  /**
   * Runs `command` on server `index` once its client is connected. Nothing is sent once `signal`
   * has aborted: a call that timed out must not go on to its next round (a replacePlan whose
   * reads answered late would otherwise write the plan after its caller was told it failed).
   */
  private async run<T>(index: number, signal: AbortSignal, command: (client: RedisClient) => Promise<T>): Promise<T> {
    const client = this.clients[index];
    if (!client) throw new Error(`no client ${index}`);
    signal.throwIfAborted();
    try {
      await whenReady(client, signal);
      signal.throwIfAborted();
      return await command(client);
    } catch (error) {
      throw describeRedisFailure(client, error);
    }
  }

  private call<T>(operation: string, opts: CallOptions, round: (signal: AbortSignal) => Promise<T>): Promise<T> {
    return backendCall(this.name, operation, opts, round);
  }
}

function okValues<T>(votes: readonly Vote<T>[]): T[] {
  return votes.flatMap((v) => (v.ok ? [v.value] : []));
}

/** Decides a read round: the value a quorum of servers answered, or an error when none can. */
function agreed<V>(state: RoundState<V>, servers: number): V | undefined {
  const counts = new Map<V, number>();
  for (const v of okValues(state.votes)) counts.set(v, (counts.get(v) ?? 0) + 1);
  let best = 0;
  for (const [v, count] of counts) {
    if (count >= state.quorum) return v;
    best = Math.max(best, count);
  }
  if (best + state.pending < state.quorum) throw noQuorum(state, servers, " (servers disagree or fail)");
  return undefined;
}
