import { randomUUID } from "node:crypto";
import type { Etcd3, ICompare, IKeyValue, IRangeRequest, IRequestOp, IResponseHeader, ITxnRequest, ITxnResponse } from "etcd3";
import { ConfigError } from "../errors/config-error.js";
import { PlanMismatchError } from "../errors/plan-mismatch-error.js";
import { PlanMissingError } from "../errors/plan-missing-error.js";
import { decodeHolderRecord, encodeHolderRecord, validateHolderRecord } from "../contract/holder-record.js";
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
  PublishedHolder,
  ResourceState,
} from "../contract/lease-backend.js";
import { decodeStoredPlan, encodeStoredPlan, partitionPools, storedPlanOrThrow, validatePlan, type Plan, type StoredPlan } from "../contract/plan.js";
import { MAX_LEASE_TTL_MS, backendEpochGraceMs, creationGraceMs, deletionGraceMs, switchGraceMs } from "../contract/timing.js";
import { holderIdValue, resourceName } from "../contract/validate.js";
import { backendCall } from "./backend-call.js";

/** Options of {@link EtcdLeaseBackend}. */
export interface EtcdLeaseBackendOptions {
  /**
   * An `etcd3` client, owned by the caller (close() does not close it). Configure it so a dead
   * server fails calls instead of queueing them behind retries and an open circuit breaker:
   * `new Etcd3({ hosts, faultHandling: { host: () => noop, global: noop } })` with `noop` from
   * `cockatiel`. With the defaults a call may be retried up to 3 times, and after 3 failures the
   * circuit breaker refuses every call for 5 s, also after the server is back. Every call is
   * bounded by its `timeoutMs` regardless (as a gRPC deadline and a local timer).
   */
  client: Etcd3;
  /** Prefix of every key this backend writes (default `"partitioned-rate-limiter/"`). */
  prefix?: string;
}

type Grpc = { deadline: number };

/** A gRPC deadline for calls with only a signal, so an abandoned call cannot linger forever. */
const DEFAULT_DEADLINE_MS = 30_000;
/** How much later than the caller's timeout the gRPC deadline falls, so our own timer reports it. */
const DEADLINE_SLACK_MS = 200;
/** Candidates per transaction: one nested transaction per candidate, kept shallow. */
const CANDIDATES_PER_TXN = 32;
/** Read-compare-write attempts of a plan change before it fails (each lost race means another writer). */
const CAS_ATTEMPTS = 5;
/** The server clock's lease: about 31 years, never renewed (etcd allows up to 9e9 s). */
const CLOCK_TTL_S = 1_000_000_000;

/**
 * EtcdLeaseBackend grants partition leases in etcd (3.4 or later) through an injected `etcd3`
 * client. Keys under `<prefix><resource>/`: `plan` (the {@link encodeStoredPlan} text, which
 * carries the epoch), `deleted` (a tombstone keeping the last epoch), `grace/<id>` (one per
 * running grace, on an etcd lease of its length), `p/<partition>` (`<epoch> <token> <holderId>`
 * on the grant's own etcd lease; its create revision is the fencing token) and `h/<holderId>` (the
 * holder record, on a per-holder lease of the plan's TTL; its create revision is `since`).
 *
 * **One etcd lease per grant**: a partition lives exactly as long as its own lease is kept alive,
 * so one its holder stopped renewing expires by its TTL while the holder's others are renewed,
 * and a lost acquire reply never leaves a key held forever (it expires with its fresh lease).
 *
 * **The server clock** `<prefix>.server` holds the etcd cluster ID, on a lease of ~31 years that
 * is never renewed. etcd revives every lease to its full TTL when a leader takes office (restart,
 * leader change, restore from a snapshot), so the lease's `grantedTTL − TTL` bounds from below the
 * time since leases were last revived. A lease etcd forgot (written after the snapshot it was
 * restored from, or lost with its data dir) was last renewed before that revival, so its holder
 * stops within one TTL of it. Hence:
 * - a grant is returned only once the clock has run for `backendEpochGraceMs` (the longest TTL
 *   and a window: the restored plan may be older than the forgotten leases'), checked after the
 *   acquire transaction; otherwise its lease is revoked and the answer is a grace. So for about
 *   61 s after any etcd restart or leader change nothing new is granted (renewals go on, and
 *   heartbeats report the grace; a crashed holder's partitions are not taken over sooner).
 * - the clock is restarted for every caller, atomically (compare on the key's mod revision), when
 *   the key is missing, holds another cluster ID than the response header (a restore with a new
 *   `--initial-cluster-token`), or this instance sees a revision below one it saw before (the store
 *   went back in time); a grant whose response shows any of these is revoked, not returned.
 * - a new resource (no key under its name, no tombstone) needs no creation grace once the clock
 *   has run that long (`creationGraceMs`: 60 s for history `"unknown"`): nothing forgotten is live.
 *
 * Detected: a wiped data dir (the plan is gone: creation grace), a restore by `etcdctl snapshot
 * restore` with a new or the same cluster token (with the same token, names and peer URLs the
 * cluster and member IDs are the original's, measured on 3.4; the revision goes back and every
 * lease in the snapshot returns with its full TTL), a lagging member forced into a new cluster.
 * Not detected: keys deleted by hand under the prefix (use `deletePlan`), and a same-token restore
 * of an etcd that persists lease checkpoints (`--experimental-enable-lease-checkpoint-persist`,
 * 3.5+), whose leases return with their checkpointed TTLs (unless a running instance saw the later
 * revision).
 *
 * Sequential round trips (RPCs), measured in test/unit/etcd-backend.test.ts: tryAcquire 3 (grant
 * a lease; a transaction comparing the plan text and the absence of grace keys that takes the
 * first candidate whose create revision is 0, nested, 32 candidates per transaction; the clock's
 * TTL, or a revoke when nothing was taken); heartbeat 1 (one keepalive stream for every lease and
 * the record lease, beside one transaction that puts the record and reads the resource; +1 for a
 * holder's first, +1 while a grace key exists, +1 while the server clock is younger than the grace
 * or was not yet read in this Raft term); release 1; inspect 2; readPlan and ensurePlan of a
 * stored plan 1; creating, replacing or deleting a plan 4 (2 without a grace). TTLs are whole
 * seconds from 2 s to 60 s; graces are rounded up to whole seconds, and etcd deletes expired keys
 * up to 500 ms late. No timers run between calls.
 */
export class EtcdLeaseBackend implements LeaseBackend {
  /** `"etcd"`. */
  readonly name = "etcd";
  /** etcd revives every lease to its full TTL when a leader takes office, a restored snapshot's included. */
  readonly revivesExpiredLeases = true;
  /** Whole seconds from 2 s to 60 s. */
  readonly leaseTtlRule: LeaseTtlRule = {
    minMs: 2000,
    maxMs: MAX_LEASE_TTL_MS,
    stepMs: 1000,
    reason: "etcd lease TTLs are whole seconds, at least 2 s",
  };
  private readonly client: Etcd3;
  private readonly prefix: string;
  private readonly serverKey: string;
  /** The last plan text read per resource: the acquire transaction compares it. */
  private readonly plans = new Map<string, { text: string; stored: StoredPlan }>();
  /** Record leases by `<resource>\n<holderId>`. */
  private readonly recordLeases = new Map<string, string>();
  /** The highest revision seen (from linearizable KV responses) and its cluster. */
  private seen: { cluster: string; revision: number } | null = null;
  /**
   * The server clock as last measured by a heartbeat: its lease, cluster and Raft term, and a lower
   * bound on its age. etcd revives leases only when a member takes office, which starts a new
   * term, so while all three match the clock is at least this old (see {@link clockGraceMs}).
   */
  private measuredClock: { lease: string; cluster: string; term: string; ageMs: number } | null = null;
  private closed = false;

  /** Creates a backend on `options.client`; throws ConfigError for a missing client or a bad prefix. */
  constructor(options: EtcdLeaseBackendOptions) {
    const client = (options as Partial<EtcdLeaseBackendOptions> | undefined)?.client;
    if (typeof client !== "object" || client === null || typeof client.kv?.txn !== "function") {
      throw new ConfigError("client", client, "an etcd3 Etcd3 client");
    }
    const prefix = options.prefix ?? "partitioned-rate-limiter/";
    if (typeof prefix !== "string" || prefix.length > 200) throw new ConfigError("prefix", prefix, "a string of at most 200 characters");
    this.client = client;
    this.prefix = prefix;
    // Resource names start with a letter or digit, so this key cannot clash with one.
    this.serverKey = `${prefix}.server`;
  }

  async ensurePlan(resource: string, plan: Plan, opts: EnsurePlanOptions): Promise<StoredPlan> {
    const wanted = this.checkedPlan(plan);
    const keys = this.keys(resource);
    return this.call("ensurePlan", opts, async (grpc) => {
      for (let attempt = 0; ; attempt++) {
        if (attempt === CAS_ATTEMPTS) throw new Error(`the keys of "${resource}" kept changing`);
        const floor = this.seen;
        const read = await this.txn({ success: [range(keys.base, true), range(this.serverKey)] }, grpc);
        const state = parseResource(keys, rangeKvs(read, 0));
        const clock = await this.checkServer(read.header, rangeKvs(read, 1)[0], floor, grpc);
        if (state.plan) return this.remember(resource, state.plan.value.toString());
        let graceMs = creationGraceMs(wanted, opts.history ?? "unknown");
        // No trace of the resource and etcd revived nothing for that long: nothing forgotten is live.
        if (graceMs > 0 && state.count === 0 && clock !== null && (await this.clockAgeMs(clock, grpc)) >= graceMs) graceMs = 0;
        const stored: StoredPlan = { plan: wanted, epoch: tombstoneEpoch(state.deleted) + 1 };
        const text = encodeStoredPlan(stored);
        const compare = [modIs(keys.plan, 0), modIs(keys.deleted, state.deleted?.mod_revision ?? 0)];
        if (await this.commit(keys, compare, [put(keys.plan, text)], graceMs, grpc)) return this.remember(resource, text);
      }
    });
  }

  async readPlan(resource: string, opts: CallOptions): Promise<StoredPlan | null> {
    const keys = this.keys(resource);
    return this.call("readPlan", opts, (grpc) => this.readPlanIn(resource, keys, grpc));
  }

  async replacePlan(resource: string, plan: Plan, opts: CallOptions & { expectedEpoch?: number }): Promise<StoredPlan> {
    const wanted = this.checkedPlan(plan);
    const keys = this.keys(resource);
    return this.call("replacePlan", opts, (grpc) =>
      this.rewritePlan(keys, grpc, (planKv, current, lastEpoch) => {
        if (opts.expectedEpoch !== undefined && (current?.epoch ?? 0) !== opts.expectedEpoch) {
          throw new PlanMismatchError(resource, planKv?.value.toString() ?? "null", "", `has epoch ${current?.epoch ?? "none"}, not the expected ${opts.expectedEpoch}`);
        }
        // An unreadable or 0.1 plan is replaced like a missing one: nothing is known about its leases.
        const graceMs = current ? switchGraceMs(current.plan, wanted) : creationGraceMs(wanted, "unknown");
        const text = encodeStoredPlan({ plan: wanted, epoch: lastEpoch + 1 });
        return { ops: [put(keys.plan, text)], graceMs, done: () => this.remember(resource, text) };
      }),
    );
  }

  async deletePlan(resource: string, opts: CallOptions): Promise<boolean> {
    const keys = this.keys(resource);
    return this.call("deletePlan", opts, (grpc) =>
      this.rewritePlan<boolean>(keys, grpc, (planKv, current, lastEpoch) => {
        if (!planKv) return { result: false };
        const ops = [{ request_delete_range: { key: Buffer.from(keys.plan) } }, put(keys.deleted, String(lastEpoch))];
        const done = (): boolean => {
          this.plans.delete(resource);
          return true;
        };
        return { ops, graceMs: current ? deletionGraceMs(current.plan) : MAX_LEASE_TTL_MS, done };
      }),
    );
  }

  async tryAcquire(request: AcquireRequest, opts: CallOptions): Promise<AcquireResult> {
    const { resource, holderId } = request;
    const epoch = request.plan.epoch;
    // The whole stored text must match: after a total loss another plan can have the same epoch.
    const wanted = encodeStoredPlan(request.plan);
    const ttlMs = request.plan.plan.leaseTtlMs;
    const keys = this.keys(resource);
    holderIdValue("holderId", holderId);
    return this.call("tryAcquire", opts, async (grpc) => {
      let cached = this.plans.get(resource);
      if (cached?.text !== wanted) {
        const stored = await this.readPlanIn(resource, keys, grpc);
        if (!stored) throw new PlanMissingError(resource);
        cached = this.plans.get(resource);
        if (cached?.text !== wanted) return { kind: "plan-changed", epoch: stored.epoch };
      }
      if (!cached) throw new PlanMissingError(resource);
      const { text, stored } = cached;
      const valid = [...new Set(request.candidates)].filter((p) => Number.isInteger(p) && p >= 0 && p < stored.plan.partitions);
      if (valid.length === 0) return { kind: "taken" };
      const leaseId = (await this.client.leaseClient.leaseGrant({ TTL: ttlMs / 1000 }, grpc)).ID;
      const token = `${leaseId}.${randomUUID()}`;
      let keep = false;
      try {
        for (let from = 0; from < valid.length; from += CANDIDATES_PER_TXN) {
          const batch = valid.slice(from, from + CANDIDATES_PER_TXN);
          const floor = this.seen;
          const response = await this.txn(acquireTxn(keys, text, batch, grantValue(epoch, token, holderId), leaseId, this.serverKey), grpc);
          if (!response.succeeded) return await this.refusal(resource, keys, wanted, response, floor, grpc);
          const index = takenIndex(response);
          if (index === null) continue;
          const clock = await this.checkServer(response.header, rangeKvs(response, 1)[0], floor, grpc);
          const graceMs = backendEpochGraceMs(stored.plan) - (clock === null ? 0 : await this.clockAgeMs(clock, grpc));
          if (graceMs > 0) return { kind: "grace", remainingMs: graceMs };
          keep = true;
          const lease: Lease = { resource, partition: batch[index]!, holderId, token, fencingToken: Number(response.header.revision), epoch };
          return { kind: "granted", lease };
        }
        return { kind: "taken" };
      } finally {
        // Nothing taken, or a grant that must not be returned: whatever is on the lease goes with it.
        if (!keep) await this.client.leaseClient.leaseRevoke({ ID: leaseId }, grpc).catch(() => undefined);
      }
    });
  }

  async heartbeat(request: HeartbeatRequest, opts: CallOptions): Promise<HeartbeatResult> {
    const { resource, leases } = request;
    const epoch = request.plan.epoch;
    const wanted = encodeStoredPlan(request.plan);
    const ttlMs = request.plan.plan.leaseTtlMs;
    const keys = this.keys(resource);
    return this.call("heartbeat", opts, async (grpc, signal) => {
      let cached = this.plans.get(resource);
      if (cached?.text !== wanted) {
        const state = parseResource(keys, (await this.client.kv.range(range(keys.base, true).request_range, grpc)).kvs);
        if (state.plan) this.remember(resource, state.plan.value.toString());
        cached = this.plans.get(resource);
        if (!state.plan || !cached || cached.text !== wanted) return this.unrenewed(resource, leases, state, grpc);
      }
      const { text, stored } = cached;
      const holder = validateHolderRecord(request.holder, stored.plan.partitions);
      const ids = leases.map((l) => (l.resource === resource && l.epoch === epoch && l.holderId === holder.holderId ? leaseIdOf(l.token) : null));
      const recordKey = `${resource}\n${holder.holderId}`;
      let recordLease = this.recordLeases.get(recordKey);
      const alive = this.keepAlive([...ids.filter((id): id is string => id !== null), ...(recordLease ? [recordLease] : [])], grpc, signal);
      alive.catch(() => undefined);
      const publish = async (id: string): Promise<ITxnResponse> =>
        this.txn(
          {
            compare: [valueIs(keys.plan, text)],
            success: [put(keys.holder(holder.holderId), encodeHolderRecord(holder), id), range(keys.base, true), range(this.serverKey)],
            failure: [range(keys.base, true), range(this.serverKey)],
          },
          grpc,
        );
      const floor = this.seen;
      let response: ITxnResponse;
      try {
        recordLease ??= (await this.client.leaseClient.leaseGrant({ TTL: ttlMs / 1000 }, grpc)).ID;
        response = await publish(recordLease);
      } catch (error) {
        // The record lease expired (no heartbeat for a TTL): publish on a new one.
        if (!isLeaseNotFound(error)) throw error;
        recordLease = (await this.client.leaseClient.leaseGrant({ TTL: ttlMs / 1000 }, grpc)).ID;
        response = await publish(recordLease);
      }
      this.recordLeases.set(recordKey, recordLease);
      const offset = response.succeeded ? 1 : 0;
      const state = parseResource(keys, rangeKvs(response, offset));
      const clock = await this.checkServer(response.header, rangeKvs(response, offset + 1)[0], floor, grpc);
      if (!response.succeeded) {
        if (state.plan) this.remember(resource, state.plan.value.toString());
        else this.plans.delete(resource);
        await alive.catch(() => undefined);
        return this.unrenewed(resource, leases, state, grpc);
      }
      const ttls = await alive;
      const renewed = leases.map((lease, i) => {
        const id = ids[i];
        const kv = state.partitions.get(lease.partition);
        return id !== null && id !== undefined && (ttls.get(id) ?? 0) > 0 && kv?.lease === id && kv.value.toString() === grantValue(epoch, lease.token, lease.holderId);
      });
      const ownTtl = ttls.get(recordLease);
      const holders = publishedHolders(state, (id) => (id !== holder.holderId ? null : ownTtl === undefined ? ttlMs : expiresInMs(ownTtl, ttlMs / 1000)));
      // Report the grace a grant would find, the young clock's included, so the limiter waits it out
      // instead of vouching (docs/guarantee.md, G3) for a plan under which nothing can be granted.
      const clockGrace = clock === null ? backendEpochGraceMs(stored.plan) : await this.clockGraceMs(clock, response.header, stored.plan, grpc);
      const graceMs = Math.max(await this.graceMs(state, grpc), clockGrace);
      // Fresh, never from the cache: a restore can repeat the cached lease, cluster and term.
      const revivedAgoMs = request.proveContinuity ? (clock === null ? 0 : await this.clockAgeMs(clock, grpc)) : undefined;
      return { renewed, samePlan: true, epoch: stored.epoch, graceMs, holders, ...(revivedAgoMs === undefined ? {} : { revivedAgoMs }) };
    });
  }

  async release(lease: Lease, opts: CallOptions): Promise<void> {
    const keys = this.keys(lease.resource);
    const id = leaseIdOf(lease.token);
    return this.call("release", opts, async (grpc) => {
      if (id === null) return;
      // Compare value and lease: only this grant is deleted; its keyless lease runs out by its TTL.
      const key = keys.partition(lease.partition);
      const compare: ICompare[] = [valueIs(key, grantValue(lease.epoch, lease.token, lease.holderId)), { key: Buffer.from(key), target: "Lease", result: "Equal", lease: id }];
      await this.txn({ compare, success: [{ request_delete_range: { key: Buffer.from(key) } }] }, grpc);
    });
  }

  async inspect(resource: string, opts: CallOptions): Promise<ResourceState> {
    const keys = this.keys(resource);
    return this.call("inspect", opts, async (grpc) => {
      const read = await this.txn({ success: [range(keys.base, true), range(this.serverKey)] }, grpc);
      const state = parseResource(keys, rangeKvs(read, 0));
      const stored = state.plan ? storedPlanOrThrow(resource, state.plan.value.toString()) : null;
      const server = rangeKvs(read, 1)[0];
      const live = server && server.lease !== "0" && server.value.toString() === read.header.cluster_id ? server : undefined;
      const leaseIds = new Set([...state.partitions.values(), ...state.holders.values(), ...state.graces].map((kv) => kv.lease));
      if (stored && live) leaseIds.add(live.lease);
      const ttls = await this.timesToLive([...leaseIds], grpc);
      const expiry = (kv: IKeyValue): number | null => {
        const t = ttls.get(kv.lease);
        return t && t.ttl >= 0 ? expiresInMs(t.ttl, t.granted) : null;
      };
      const partitions = (stored ? partitionPools(stored.plan) : []).map((pool, partition) => {
        const kv = state.partitions.get(partition);
        const left = kv ? expiry(kv) : null;
        const [grantEpoch, , holderId] = kv && left !== null ? kv.value.toString().split(" ") : [];
        return kv && holderId
          ? { partition, pool, holderId, expiresInMs: left, fencingToken: Number(kv.create_revision), epoch: Number(grantEpoch) }
          : { partition, pool, holderId: null, expiresInMs: null, fencingToken: null, epoch: null };
      });
      // What a grant would find: the longest grace key, and a server clock younger than one TTL.
      const clock = live ? ttls.get(live.lease) : undefined;
      const graceMs = Math.max(
        0,
        ...state.graces.map((kv) => (kv.lease === "0" ? graceLength(kv) : (expiry(kv) ?? 0))),
        stored ? backendEpochGraceMs(stored.plan) - (clock ? ageMs(clock) : 0) : 0,
      );
      const holders = publishedHolders(state, (id) => expiry(state.holders.get(id)!)).filter((h) => h.expiresInMs !== null);
      return { stored, graceMs, partitions, holders };
    });
  }

  /**
   * Stops using the backend: later calls reject with BackendError. Revokes the record leases this
   * instance granted (its records vanish at once); partition leases run out by their TTL, since a
   * limiter may still admit on them until its local deadline. Does not close the injected client.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const deadline = Date.now() + 2000;
    const ids = [...this.recordLeases.values()];
    this.recordLeases.clear();
    await Promise.all(ids.map((ID) => this.client.leaseClient.leaseRevoke({ ID }, { deadline }).catch(() => undefined)));
  }

  /**
   * Checks the server key against a linearizable response: it must exist, hold the response's
   * cluster ID, and the revision must not be below `floor` (what this instance had seen when it
   * sent the request). Returns the clock's lease, or null when the clock was (re)started now.
   */
  private async checkServer(header: IResponseHeader, kv: IKeyValue | undefined, floor: EtcdLeaseBackend["seen"], grpc: Grpc): Promise<string | null> {
    const cluster = header.cluster_id;
    const revision = Number(header.revision);
    const wentBack = floor !== null && floor.cluster === cluster && revision < floor.revision;
    if (kv && kv.lease !== "0" && kv.value.toString() === cluster && !wentBack) {
      if (this.seen?.cluster !== cluster || this.seen.revision < revision) this.seen = { cluster, revision };
      return kv.lease;
    }
    const clock = (await this.client.leaseClient.leaseGrant({ TTL: CLOCK_TTL_S }, grpc)).ID;
    const restart = await this.txn({ compare: [modIs(this.serverKey, kv?.mod_revision ?? 0)], success: [put(this.serverKey, cluster, clock)] }, grpc);
    // Lost the race: another caller restarted it, which is just as young.
    if (!restart.succeeded) await this.client.leaseClient.leaseRevoke({ ID: clock }, grpc).catch(() => undefined);
    this.seen = { cluster, revision: Number(restart.header.revision) };
    return null;
  }

  /**
   * ms left of the backend-epoch grace by the server clock `clock`, for heartbeats: read once per
   * clock lease, cluster and Raft term; a lease revival (restart, leader change, restore) comes
   * with a new term, or (a restore that repeats a term) is caught by tryAcquire's own reading,
   * which never uses this cache.
   */
  private async clockGraceMs(clock: string, header: IResponseHeader, plan: Plan, grpc: Grpc): Promise<number> {
    const needed = backendEpochGraceMs(plan);
    const known = this.measuredClock;
    const same = known !== null && known.lease === clock && known.cluster === header.cluster_id && known.term === String(header.raft_term);
    if (same && known.ageMs >= needed) return 0;
    const ageMs = await this.clockAgeMs(clock, grpc);
    this.measuredClock = { lease: clock, cluster: header.cluster_id, term: String(header.raft_term), ageMs };
    return Math.max(0, needed - ageMs);
  }

  /** A lower bound on how long etcd's leader has not revived the clock's lease, in ms (0 when gone). */
  private async clockAgeMs(clock: string, grpc: Grpc): Promise<number> {
    const t = (await this.timesToLive([clock], grpc)).get(clock);
    return t && t.ttl > 0 ? ageMs(t) : 0;
  }

  private async timesToLive(ids: readonly string[], grpc: Grpc): Promise<Map<string, { ttl: number; granted: number }>> {
    const answers = await Promise.all(ids.map((ID) => this.client.leaseClient.leaseTimeToLive({ ID }, grpc)));
    return new Map(answers.map((a, i) => [ids[i]!, { ttl: Number(a.TTL), granted: Number(a.grantedTTL) }]));
  }

  /** ms left of the longest grace key, attaching any left without a lease; 0 when none. */
  private async graceMs(state: ResourceKvs, grpc: Grpc): Promise<number> {
    const unleased = state.graces.filter((kv) => kv.lease === "0");
    const ttls = await this.timesToLive(state.graces.filter((kv) => kv.lease !== "0").map((kv) => kv.lease), grpc);
    await Promise.all(unleased.map((kv) => this.leaseGrace(kv.key.toString(), graceLength(kv), kv.mod_revision, grpc)));
    return Math.max(0, ...unleased.map(graceLength), ...[...ttls.values()].map((t) => (t.ttl >= 0 ? expiresInMs(t.ttl, t.granted) : 0)));
  }

  /**
   * Why the acquire transaction's compare failed: another plan, no plan, or a grace, reported as
   * the longest of the grace keys and the young server clock's (a plan stored again after a wipe
   * has a short grace key and a clock that has just started).
   */
  private async refusal(resource: string, keys: Keys, wanted: string, response: ITxnResponse, floor: EtcdLeaseBackend["seen"], grpc: Grpc): Promise<AcquireResult> {
    const planKv = rangeKvs(response, 0)[0];
    if (!planKv) {
      this.plans.delete(resource);
      throw new PlanMissingError(resource);
    }
    const stored = this.remember(resource, planKv.value.toString());
    if (planKv.value.toString() !== wanted) return { kind: "plan-changed", epoch: stored.epoch };
    const clockGrace = async (): Promise<number> => {
      const clock = await this.checkServer(response.header, rangeKvs(response, 2)[0], floor, grpc);
      return backendEpochGraceMs(stored.plan) - (clock === null ? 0 : await this.clockAgeMs(clock, grpc));
    };
    const [keyGrace, clockLeft] = await Promise.all([this.graceMs(parseResource(keys, rangeKvs(response, 1)), grpc), clockGrace()]);
    return { kind: "grace", remainingMs: Math.max(1, keyGrace, clockLeft) };
  }

  /** The answer to a heartbeat under another epoch or without a plan: nothing renewed or published. */
  private async unrenewed(resource: string, leases: readonly Lease[], state: ResourceKvs, grpc: Grpc): Promise<HeartbeatResult> {
    const stored = state.plan ? storedPlanOrThrow(resource, state.plan.value.toString()) : null;
    return { renewed: leases.map(() => false), samePlan: false, epoch: stored?.epoch ?? null, graceMs: await this.graceMs(state, grpc), holders: stored ? publishedHolders(state, () => null) : [] };
  }

  /** Writes `ops` if `compare` holds, with a grace key of `graceMs`; false when the compare failed. */
  private async commit(keys: Keys, compare: ICompare[], ops: IRequestOp[], graceMs: number, grpc: Grpc): Promise<boolean> {
    const grace = graceMs > 0 ? `${keys.grace}${randomUUID()}` : null;
    const response = await this.txn({ compare, success: grace ? [...ops, put(grace, String(graceMs))] : ops }, grpc);
    if (response.succeeded && grace) await this.leaseGrace(grace, graceMs, response.header.revision, grpc);
    return response.succeeded;
  }

  /**
   * Attaches a grace key, written without a lease together with what it guards, to a lease of its
   * length (whole seconds, rounded up) granted now: a lease granted before the write would end early
   * by the time between grant and write. A key left without a lease (this call failed) blocks
   * grants until an acquirer attaches it again ({@link graceMs}), which only lengthens the grace.
   */
  private async leaseGrace(key: string, graceMs: number, modRevision: string, grpc: Grpc): Promise<void> {
    const lease = (await this.client.leaseClient.leaseGrant({ TTL: Math.ceil(graceMs / 1000) }, grpc)).ID;
    const attached = await this.txn({ compare: [modIs(key, modRevision)], success: [put(key, String(graceMs), lease)] }, grpc);
    if (!attached.succeeded) await this.client.leaseClient.leaseRevoke({ ID: lease }, grpc).catch(() => undefined);
  }

  /**
   * Reads the plan and the tombstone, lets `decide` say what to write (with the stored plan, if
   * readable, and the last epoch either holds), and commits it with its grace if neither changed
   * meanwhile; reads again after a lost race.
   */
  private async rewritePlan<T>(
    keys: Keys,
    grpc: Grpc,
    decide: (planKv: IKeyValue | undefined, current: StoredPlan | null, lastEpoch: number) => { result: T } | { ops: IRequestOp[]; graceMs: number; done: () => T },
  ): Promise<T> {
    for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
      const read = await this.txn({ success: [range(keys.plan), range(keys.deleted)] }, grpc);
      const [planKv, deleted] = [rangeKvs(read, 0)[0], rangeKvs(read, 1)[0]];
      const decoded = planKv ? decodeStoredPlan(planKv.value.toString()) : null;
      const current = decoded?.kind === "plan" ? decoded.stored : null;
      const step = decide(planKv, current, Math.max(current?.epoch ?? 0, tombstoneEpoch(deleted)));
      if ("result" in step) return step.result;
      const compare = [modIs(keys.plan, planKv?.mod_revision ?? 0), modIs(keys.deleted, deleted?.mod_revision ?? 0)];
      if (await this.commit(keys, compare, step.ops, step.graceMs, grpc)) return step.done();
    }
    throw new Error("the stored plan kept changing");
  }

  private async readPlanIn(resource: string, keys: Keys, grpc: Grpc): Promise<StoredPlan | null> {
    const kv = (await this.client.kv.range({ key: Buffer.from(keys.plan) }, grpc)).kvs[0];
    if (!kv) this.plans.delete(resource);
    return kv ? this.remember(resource, kv.value.toString()) : null;
  }

  /** Decodes and caches a stored plan text; PlanMismatchError when unreadable or from 0.1. */
  private remember(resource: string, text: string): StoredPlan {
    const stored = storedPlanOrThrow(resource, text);
    this.plans.set(resource, { text, stored });
    return stored;
  }

  /** Sends one keepalive stream for `ids`; resolves to each lease's TTL in s (0 when it is gone). */
  private async keepAlive(ids: readonly string[], grpc: Grpc, signal: AbortSignal): Promise<Map<string, number>> {
    const unique = [...new Set(ids)];
    const ttls = new Map<string, number>();
    if (unique.length === 0) return ttls;
    const stream = await this.client.leaseClient.leaseKeepAlive(grpc);
    return new Promise((resolve, reject) => {
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
        ttls.set(String(response.ID), Number(response.TTL));
        if (ttls.size < unique.length) return;
        stream.end();
        finish(() => resolve(ttls));
      });
      stream.on("error", (error) => finish(() => reject(error)));
      stream.on("end", () => finish(() => reject(new Error("the keepalive stream ended before every reply"))));
      for (const ID of unique) stream.write({ ID });
    });
  }

  private txn(request: ITxnRequest, grpc: Grpc): Promise<ITxnResponse> {
    return this.client.kv.txn({ compare: [], failure: [], ...request }, grpc);
  }

  private checkedPlan(plan: Plan): Plan {
    const wanted = validatePlan(plan, "plan.");
    const rule = this.leaseTtlRule;
    if (wanted.leaseTtlMs < rule.minMs || wanted.leaseTtlMs > rule.maxMs || wanted.leaseTtlMs % rule.stepMs !== 0) {
      throw new ConfigError("plan.leaseTtlMs", wanted.leaseTtlMs, `whole seconds from ${rule.minMs} to ${rule.maxMs} ms`, rule.reason);
    }
    return wanted;
  }

  private keys(resource: string): Keys {
    resourceName("resource", resource);
    const base = `${this.prefix}${resource}/`;
    return {
      base,
      plan: `${base}plan`,
      deleted: `${base}deleted`,
      grace: `${base}grace/`,
      partition: (n) => `${base}p/${n}`,
      holder: (id) => `${base}h/${id}`,
    };
  }

  /**
   * Runs `work` under the caller's signal and timeout (see backendCall); the timeout also becomes
   * the gRPC deadline (a wall-clock instant, as gRPC requires; it bounds transport, never a lease).
   */
  private call<T>(operation: string, opts: CallOptions, work: (grpc: Grpc, signal: AbortSignal) => Promise<T>): Promise<T> {
    return backendCall(this.name, operation, opts, async (signal) => {
      if (this.closed) throw new Error("the backend is closed");
      return work({ deadline: Date.now() + Math.max(0, opts.timeoutMs ?? DEFAULT_DEADLINE_MS) + DEADLINE_SLACK_MS }, signal);
    });
  }
}

interface Keys {
  readonly base: string;
  readonly plan: string;
  readonly deleted: string;
  readonly grace: string;
  partition(n: number): string;
  holder(holderId: string): string;
}

/** The keys of one resource, sorted by kind. */
interface ResourceKvs {
  plan?: IKeyValue;
  deleted?: IKeyValue;
  graces: IKeyValue[];
  partitions: Map<number, IKeyValue>;
  holders: Map<string, IKeyValue>;
  /** How many keys exist under the resource's name. */
  count: number;
}

function parseResource(keys: Keys, kvs: readonly IKeyValue[]): ResourceKvs {
  const state: ResourceKvs = { graces: [], partitions: new Map(), holders: new Map(), count: kvs.length };
  for (const kv of kvs) {
    const name = kv.key.toString();
    const rest = name.slice(keys.base.length);
    if (name === keys.plan) state.plan = kv;
    else if (name === keys.deleted) state.deleted = kv;
    else if (name.startsWith(keys.grace)) state.graces.push(kv);
    else if (rest.startsWith("p/") && /^p\/\d{1,5}$/.test(rest)) state.partitions.set(Number(rest.slice(2)), kv);
    else if (rest.startsWith("h/")) state.holders.set(rest.slice(2), kv);
  }
  return state;
}

/** Every readable holder record; `since` is the record key's create revision. */
function publishedHolders(state: ResourceKvs, expires: (holderId: string) => number | null): PublishedHolder[] {
  const out: PublishedHolder[] = [];
  for (const [id, kv] of state.holders) {
    const record = decodeHolderRecord(id, kv.value.toString());
    if (record) out.push({ ...record, since: Number(kv.create_revision), expiresInMs: expires(id) });
  }
  return out;
}

/** A lower bound on the time since an etcd lease was granted or last revived: TTL is truncated to whole seconds. */
function ageMs(t: { ttl: number; granted: number }): number {
  return Math.max(0, (t.granted - t.ttl - 1) * 1000);
}

/** An upper bound on a lease's remaining time in ms, from its truncated TTL, at most its granted TTL. */
function expiresInMs(ttlSeconds: number, grantedSeconds: number): number {
  return Math.min(ttlSeconds + 1, grantedSeconds) * 1000;
}

/** The length a grace key was written with, in ms (the longest lease TTL if unreadable). */
function graceLength(kv: IKeyValue): number {
  const ms = Number(kv.value.toString());
  return Number.isFinite(ms) && ms > 0 ? ms : MAX_LEASE_TTL_MS;
}

/** The last epoch a tombstone keeps (0 without one). */
function tombstoneEpoch(kv: IKeyValue | undefined): number {
  const epoch = Number(kv?.value.toString());
  return Number.isSafeInteger(epoch) && epoch > 0 ? epoch : 0;
}

function grantValue(epoch: number, token: string, holderId: string): string {
  return `${epoch} ${token} ${holderId}`;
}

/** The etcd lease id inside a token made by tryAcquire (`<lease>.<uuid>`); null for anything else. */
function leaseIdOf(token: string): string | null {
  return /^(\d{1,20})\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.exec(token)?.[1] ?? null;
}

/**
 * The acquire transaction: if the plan is still `planText` and no grace key exists, take the first
 * candidate whose key does not exist (one nested transaction per candidate) and read the server
 * key; otherwise read the plan, the grace keys and the server key, so the caller can tell why.
 */
function acquireTxn(keys: Keys, planText: string, candidates: readonly number[], value: string, leaseId: string, serverKey: string): ITxnRequest {
  let chain: IRequestOp[] = [];
  for (let i = candidates.length - 1; i >= 0; i--) {
    const key = keys.partition(candidates[i]!);
    chain = [{ request_txn: { compare: [{ key: Buffer.from(key), target: "Create", result: "Equal", create_revision: 0 }], success: [put(key, value, leaseId)], failure: chain } }];
  }
  const noGrace: ICompare = { key: Buffer.from(keys.grace), range_end: prefixEnd(keys.grace), target: "Create", result: "Equal", create_revision: 0 };
  return {
    compare: [valueIs(keys.plan, planText), noGrace],
    success: [...chain, range(serverKey)],
    failure: [range(keys.plan), range(keys.grace, true), range(serverKey)],
  };
}

/** Which candidate of the batch the acquire transaction took, or null for none. */
function takenIndex(response: ITxnResponse): number | null {
  let level: ITxnResponse | undefined = response.responses[0]?.response_txn;
  for (let index = 0; level; index++) {
    if (level.succeeded) return index;
    level = level.responses[0]?.response_txn;
  }
  return null;
}

function rangeKvs(response: ITxnResponse, index: number): IKeyValue[] {
  return response.responses[index]?.response_range?.kvs ?? [];
}

function range(key: string, prefix = false): { request_range: IRangeRequest } {
  return { request_range: prefix ? { key: Buffer.from(key), range_end: prefixEnd(key) } : { key: Buffer.from(key) } };
}

function put(key: string, value: string, lease?: string): IRequestOp {
  return { request_put: { key: Buffer.from(key), value: Buffer.from(value), ...(lease ? { lease } : {}) } };
}

function valueIs(key: string, value: string): ICompare {
  return { key: Buffer.from(key), target: "Value", result: "Equal", value: Buffer.from(value) };
}

/** mod revision 0 also matches a key that does not exist. */
function modIs(key: string, revision: string | number): ICompare {
  return { key: Buffer.from(key), target: "Mod", result: "Equal", mod_revision: revision };
}

/** The end of the key range holding every key that starts with `prefix`. */
function prefixEnd(prefix: string): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i] = end[i]! + 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

/** Whether `error` is etcd's "requested lease not found" (expired, revoked, or lost with the server's state). */
function isLeaseNotFound(error: unknown): boolean {
  return error instanceof Error && /requested lease not found/i.test(error.message);
}
