import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import type { Client, Stat } from "node-zookeeper-client";
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
  PartitionState,
  PublishedHolder,
  ResourceState,
} from "../contract/lease-backend.js";
import { decodeStoredPlan, encodeStoredPlan, partitionPools, storedPlanOrThrow, validatePlan, type Plan, type StoredPlan } from "../contract/plan.js";
import { MAX_LEASE_TTL_MS, backendEpochGraceMs, creationGraceMs, deletionGraceMs, switchGraceMs } from "../contract/timing.js";
import { holderIdValue, resourceName } from "../contract/validate.js";
import { backendCall } from "./backend-call.js";
import { Code, children, getNode, long, mkdirp, multi, touch, zkCode, type Node, type TxnOp } from "./zookeeper-client.js";

/** Options of {@link ZooKeeperLeaseBackend}. */
export interface ZooKeeperLeaseBackendOptions {
  /** The ensemble, `host:port[,host:port…]` (no chroot: use `root`). */
  connectString: string;
  /** The znode under which every resource lives (default `"/partitioned-rate-limiter"`). */
  root?: string;
  /**
   * The session timeout the client asks for, in ms (default 10,000; the server clamps it to its
   * `minSessionTimeout`..`maxSessionTimeout`). Leases do not depend on it (see the class TSDoc):
   * it only decides how long the server keeps a vanished process's session.
   */
  sessionTimeoutMs?: number;
  /** The client's pause between connection attempts, in ms (default 200). */
  spinDelayMs?: number;
}

/**
 * How long a client may be without a connection before a timed-out call replaces it: a JVM that
 * just started can take a second for the first handshake, and replacing a client in the middle of
 * one only starts another.
 */
const RECONNECT_PATIENCE_MS = 2_000;
/** Candidates read per round trip of tryAcquire (their reads are pipelined). */
const CANDIDATES_PER_READ = 64;
/** Read-compare-write attempts of a plan change before it fails (each lost race means another writer). */
const CAS_ATTEMPTS = 5;
/** The stored text of a deleted plan keeps the last epoch (E1: epochs are never reused). */
const DELETED = /^\{"deleted":(\d{1,16})\}$/;

/**
 * ZooKeeperLeaseBackend grants partition leases in ZooKeeper (3.5 or later; measured on 3.8)
 * through node-zookeeper-client (an optional peer dependency), whose sessions it opens and
 * replaces itself. Znodes under `<root>/<resource>/`: `plan` (the {@link encodeStoredPlan} text,
 * or `{"deleted":E}` after `deletePlan`, so epochs keep growing and the node's version grows with
 * every plan write), `grace` (the length in ms of the last grace started; it started at the node's
 * mtime), `clock` (written to read the server's time), `p/<partition>` (`<epoch> <ttlMs> <token>
 * <holderId>`, or empty once released) and `h/_<holderId>` (the holder record). Every node is
 * persistent; `p/` nodes are never deleted, so their versions keep growing.
 *
 * **Leases are persistent znodes checked against the server's clock, not ephemeral nodes.** An
 * ephemeral node lives as long as its session, and a session is a poor lease: it is one per
 * connection (so a holder could not lose one partition while its others are renewed), the client
 * pings it alive from its own timer (a process whose limiter stopped renewing would keep its
 * partitions for ever), the server clamps its timeout to `minSessionTimeout`..`maxSessionTimeout`
 * (2 to 20 ticks by default), and it outlives a paused or partitioned client by the whole timeout,
 * more if the server restarts meanwhile (a restarted server gives every session its full timeout
 * again). So the session timeout is not the lease TTL: a lease is held until `ttlMs` after the
 * mtime of its last write (grant or renewal), by the server's clock; the session matters to no
 * lease, and the holder stops admitting by its local deadline (rule H2 in docs/guarantee.md)
 * whatever state its session is in. Sessions are only transport: one the client cannot revive
 * (expired, or refused by a server with an older zxid after a wipe) is replaced by a new one.
 *
 * **The server's clock** is the mtime ZooKeeper stamps on every write: the leader's wall clock in
 * ms. Each tryAcquire writes `clock` and reads, in the same pipeline (a session's requests are
 * answered in order), the plan, the grace and the candidates: a lease whose mtime + TTL is before
 * the clock write's mtime had expired. Taking it is one transaction that checks the plan's and the
 * grace's versions and writes the partition with the version read (compare-and-set), so a renewal
 * in between makes it fail. Renewal is the same transaction with the holder's last version;
 * its fencing token is the grant write's mzxid, which grows with every write of the ensemble.
 * Wall clock: a step forward of the leader's clock shortens every lease by the step, and a leader
 * change moves the clock to another server's. Keep the ensemble's clocks synchronised by slewing
 * NTP (no steps); the plan's `driftFactor` covers rates, not steps.
 *
 * Detected: a server that lost its data (the plan is gone: the limiter stores it again with the
 * creation grace of what it knows, rules G1 and G3); a restore of older data seen by a running
 * instance (`<root>/.server` holds a random identity created with the first plan; under the same
 * identity a zxid below one this instance saw means ZooKeeper went back in time, and the
 * backend-epoch grace, rule G2, is started on the resource before anything is granted). A
 * ZooKeeper ensemble keeps every acknowledged write across restarts and leader changes (ZAB), so
 * these are the only ways to forget a lease. Not detected: a data dir restored from a backup with
 * no instance running that saw a later zxid, and nodes deleted by hand (use `deletePlan`). So
 * every plan is created with its creation grace (60 s for history `"unknown"`): ZooKeeper offers
 * no clock that would prove a young resource has no forgotten leases.
 *
 * Round trips (each a pipeline of requests): tryAcquire 2 (+1 per lost race, +1 per 64
 * candidates); heartbeat 2 (+1 for a holder's first record, +1 for a lease whose last version this
 * instance does not know, +2 after the plan changed); release 2; inspect 2; readPlan and
 * ensurePlan of a stored plan 1; creating a plan 3 (+3 for the root and the identity, once per
 * session); replacing or deleting one 3. Every tryAcquire and heartbeat writes (the clock, the
 * renewals, the record), so each costs the ensemble a transaction. TTLs are whole ms; expiry is
 * exact to the ms of the server's clock, and an expired lease is freed when someone takes it (no
 * sweeper runs). Fencing tokens are zxids: they grow across restarts and leader changes, but start
 * again from small numbers on a server that lost its data.
 */
export class ZooKeeperLeaseBackend implements LeaseBackend {
  /** `"zookeeper"`. */
  readonly name = "zookeeper";
  /** A lease ends `ttlMs` after its node's mtime by the server's clock: a restored node that had expired stays expired. */
  readonly revivesExpiredLeases = false;
  /** Whole ms from 100 ms to the library's maximum. */
  readonly leaseTtlRule: LeaseTtlRule = {
    minMs: 100,
    maxMs: MAX_LEASE_TTL_MS,
    stepMs: 1,
    reason: "ZooKeeper leases expire by znode mtimes, which are whole ms",
  };
  private readonly connectString: string;
  private readonly root: string;
  private readonly sessionTimeoutMs: number;
  private readonly spinDelayMs: number;
  private client: Client | null = null;
  /** Whether `root` and `.server` were made in the current session. */
  private rooted = false;
  /** The last plan node read per resource; only trusted while its version is the stored one. */
  private readonly plans = new Map<string, { text: string; version: number; stored: StoredPlan }>();
  /** The last version written per lease token: renewals compare-and-set on it. */
  private readonly versions = new Map<string, number>();
  /** The server identity and the highest zxid seen under it. */
  private seen: { id: string; zxid: number } | null = null;
  /** When the current client last lost (or had not yet made) its connection; null while connected. */
  private unconnectedSince: number | null = null;
  private closed = false;

  /** Creates a backend; connects on first use. Throws ConfigError for a bad option. */
  constructor(options: ZooKeeperLeaseBackendOptions) {
    const o = (options ?? {}) as Partial<ZooKeeperLeaseBackendOptions>;
    if (typeof o.connectString !== "string" || !/^[^\s/,]+(,[^\s/,]+)*$/.test(o.connectString)) {
      throw new ConfigError("connectString", o.connectString, "host:port[,host:port…] without a chroot");
    }
    const root = o.root ?? "/partitioned-rate-limiter";
    if (typeof root !== "string" || !/^(\/[A-Za-z0-9._-]+)+$/.test(root) || root.length > 200 || /\/\.\.?(\/|$)/.test(root)) {
      throw new ConfigError("root", root, "an absolute znode path such as /partitioned-rate-limiter, at most 200 characters");
    }
    const sessionTimeoutMs = o.sessionTimeoutMs ?? 10_000;
    if (!Number.isInteger(sessionTimeoutMs) || sessionTimeoutMs < 1 || sessionTimeoutMs > 3_600_000) throw new ConfigError("sessionTimeoutMs", sessionTimeoutMs, "whole ms from 1 to 3,600,000");
    const spinDelayMs = o.spinDelayMs ?? 200;
    if (!Number.isInteger(spinDelayMs) || spinDelayMs < 1 || spinDelayMs > 60_000) throw new ConfigError("spinDelayMs", spinDelayMs, "whole ms from 1 to 60,000");
    this.connectString = o.connectString;
    this.root = root;
    this.sessionTimeoutMs = sessionTimeoutMs;
    this.spinDelayMs = spinDelayMs;
  }

  async ensurePlan(resource: string, plan: Plan, opts: EnsurePlanOptions): Promise<StoredPlan> {
    const wanted = this.checkedPlan(plan);
    const paths = this.paths(resource);
    return this.call("ensurePlan", opts, async (zk) => {
      for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
        const node = await getNode(zk, paths.plan);
        const decoded = node ? decodeStoredPlan(node.data) : null;
        if (node && !DELETED.test(node.data)) return this.remember(resource, node);
        const stored: StoredPlan = { plan: wanted, epoch: lastEpoch(node, decoded) + 1 };
        if (await this.writePlan(zk, paths, node, encodeStoredPlan(stored), creationGraceMs(wanted, opts.history ?? "unknown"))) return this.remembered(resource, stored);
      }
      throw new Error(`the plan of "${resource}" kept changing`);
    });
  }

  async readPlan(resource: string, opts: CallOptions): Promise<StoredPlan | null> {
    const paths = this.paths(resource);
    return this.call("readPlan", opts, async (zk) => {
      const node = await getNode(zk, paths.plan);
      if (!node || DELETED.test(node.data)) {
        this.plans.delete(resource);
        return null;
      }
      return this.remember(resource, node);
    });
  }

  async replacePlan(resource: string, plan: Plan, opts: CallOptions & { expectedEpoch?: number }): Promise<StoredPlan> {
    const wanted = this.checkedPlan(plan);
    const paths = this.paths(resource);
    return this.call("replacePlan", opts, async (zk) => {
      for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
        const node = await getNode(zk, paths.plan);
        const decoded = node ? decodeStoredPlan(node.data) : null;
        const current = decoded?.kind === "plan" ? decoded.stored : null;
        if (opts.expectedEpoch !== undefined && (current?.epoch ?? 0) !== opts.expectedEpoch) {
          throw new PlanMismatchError(resource, node?.data ?? "null", "", `has epoch ${current?.epoch ?? "none"}, not the expected ${opts.expectedEpoch}`);
        }
        // An unreadable or 0.1 plan is replaced like a missing one: nothing is known about its leases.
        const graceMs = current ? switchGraceMs(current.plan, wanted) : creationGraceMs(wanted, "unknown");
        const stored: StoredPlan = { plan: wanted, epoch: lastEpoch(node, decoded) + 1 };
        if (await this.writePlan(zk, paths, node, encodeStoredPlan(stored), graceMs)) return this.remembered(resource, stored);
      }
      throw new Error(`the plan of "${resource}" kept changing`);
    });
  }

  async deletePlan(resource: string, opts: CallOptions): Promise<boolean> {
    const paths = this.paths(resource);
    return this.call("deletePlan", opts, async (zk) => {
      for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
        const node = await getNode(zk, paths.plan);
        if (!node || DELETED.test(node.data)) return false;
        const decoded = decodeStoredPlan(node.data);
        const graceMs = decoded.kind === "plan" ? deletionGraceMs(decoded.stored.plan) : MAX_LEASE_TTL_MS;
        if (await this.writePlan(zk, paths, node, `{"deleted":${lastEpoch(node, decoded)}}`, graceMs)) {
          this.plans.delete(resource);
          return true;
        }
      }
      throw new Error(`the plan of "${resource}" kept changing`);
    });
  }

  async tryAcquire(request: AcquireRequest, opts: CallOptions): Promise<AcquireResult> {
    const { resource, holderId } = request;
    const epoch = request.plan.epoch;
    // The whole stored text must match: after a total loss another plan can have the same epoch.
    const wanted = encodeStoredPlan(request.plan);
    const ttlMs = request.plan.plan.leaseTtlMs;
    const paths = this.paths(resource);
    holderIdValue("holderId", holderId);
    return this.call("tryAcquire", opts, async (zk) => {
      const valid = [...new Set(request.candidates)].filter((p) => Number.isInteger(p) && p >= 0 && p < request.plan.plan.partitions);
      for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
        let refresh = false;
        for (let from = 0; from === 0 || from < valid.length; from += CANDIDATES_PER_READ) {
          const batch = valid.slice(from, from + CANDIDATES_PER_READ);
          // The clock write first: everything read after it is at least as recent.
          const clock = touch(zk, paths.clock);
          const [server, planNode, grace, ...nodes] = await Promise.all([
            getNode(zk, this.serverPath),
            getNode(zk, paths.plan),
            getNode(zk, paths.grace),
            ...batch.map((p) => getNode(zk, paths.partition(p))),
          ]);
          const now = await clock;
          if (!planNode || DELETED.test(planNode.data) || !now || !grace) {
            this.plans.delete(resource);
            throw new PlanMissingError(resource);
          }
          const stored = this.remember(resource, planNode);
          if (planNode.data !== wanted) return { kind: "plan-changed", epoch: stored.epoch };
          const nowMs = long(now.mtime);
          if (await this.wentBack(zk, server, now, paths, planNode, grace)) refresh = true;
          const graceLeft = graceRemaining(grace, nowMs);
          if (refresh || graceLeft > 0) return { kind: "grace", remainingMs: Math.max(1, graceLeft, refresh ? backendEpochGraceMs(stored.plan) : 0) };
          for (let i = 0; i < batch.length; i++) {
            const partition = batch[i]!;
            const node = nodes[i] ?? null;
            if (node && !isFree(node, nowMs)) continue;
            const token = randomUUID();
            const path = paths.partition(partition);
            const value = grantValue(epoch, ttlMs, token, holderId);
            // A node created in the transaction is written once more, so its stat comes back.
            const take: TxnOp[] = node ? [{ op: "set", path, data: value, version: node.stat.version }] : [{ op: "create", path, data: value }, { op: "set", path, data: value, version: 0 }];
            const result = await multi(zk, [{ op: "check", path: paths.plan, version: planNode.stat.version }, { op: "check", path: paths.grace, version: grace.stat.version }, ...take]);
            if (!result.ok) {
              // The plan or grace changed: read everything again. Otherwise someone else took it.
              if (result.failed < 2) {
                refresh = true;
                break;
              }
              continue;
            }
            const stat = result.stats.get(take.length + 1)!;
            this.versions.set(token, stat.version);
            const lease: Lease = { resource, partition, holderId, token, fencingToken: long(stat.mzxid), epoch };
            return { kind: "granted", lease };
          }
          if (refresh) break;
        }
        if (!refresh) return { kind: "taken" };
      }
      throw new Error(`the plan of "${resource}" kept changing`);
    });
  }

  async heartbeat(request: HeartbeatRequest, opts: CallOptions): Promise<HeartbeatResult> {
    const { resource, leases } = request;
    const epoch = request.plan.epoch;
    const wanted = encodeStoredPlan(request.plan);
    const ttlMs = request.plan.plan.leaseTtlMs;
    const paths = this.paths(resource);
    const holder = validateHolderRecord(request.holder, request.plan.plan.partitions);
    return this.call("heartbeat", opts, async (zk) => {
      let cached = this.plans.get(resource);
      if (cached?.text !== wanted) {
        const node = await getNode(zk, paths.plan);
        if (node && !DELETED.test(node.data)) this.remember(resource, node);
        else this.plans.delete(resource);
        cached = this.plans.get(resource);
        if (!node || cached?.text !== wanted) return this.unrenewed(zk, resource, paths, leases, node);
      }
      const planVersion = cached.version;
      const checkPlan: TxnOp = { op: "check", path: paths.plan, version: planVersion };
      const ours = (l: Lease) => l.resource === resource && l.epoch === epoch && l.holderId === holder.holderId;
      const recordPath = paths.holder(holder.holderId);
      const record = encodeHolderRecord(holder);
      // One pipeline: the plan and grace reads, each renewal (compare-and-set on the last version
      // this instance wrote), the record, and the list of records.
      const planRead = getNode(zk, paths.plan);
      const graceRead = getNode(zk, paths.grace);
      const renewals = leases.map((l) => (ours(l) ? this.renew(zk, checkPlan, paths.partition(l.partition), l, ttlMs) : Promise.resolve(false)));
      const published = multi(zk, [checkPlan, { op: "set", path: recordPath, data: record, version: -1 }]);
      const names = children(zk, paths.holders);
      const [planNode, grace, renewed, first, listed] = await Promise.all([planRead, graceRead, Promise.all(renewals), published, names]);
      let publish = first;
      if (!publish.ok && publish.failed === 1) {
        // A holder's first record: created, then written once more so its stat comes back.
        publish = await multi(zk, [checkPlan, { op: "create", path: recordPath, data: record }, { op: "set", path: recordPath, data: record, version: 0 }]);
      }
      if (!publish.ok || !planNode || planNode.data !== wanted || planNode.stat.version !== planVersion) {
        if (planNode && !DELETED.test(planNode.data)) this.remember(resource, planNode);
        else this.plans.delete(resource);
        return this.unrenewed(zk, resource, paths, leases, planNode);
      }
      const stat = [...publish.stats.values()].at(-1)!;
      const nowMs = long(stat.mtime);
      const name = holderName(holder.holderId);
      const holders = await this.records(zk, paths, listed.includes(name) ? listed : [...listed, name], nowMs, ttlMs);
      return { renewed, samePlan: true, epoch: cached.stored.epoch, graceMs: grace ? graceRemaining(grace, nowMs) : 0, holders };
    });
  }

  async release(lease: Lease, opts: CallOptions): Promise<void> {
    const paths = this.paths(lease.resource);
    return this.call("release", opts, async (zk) => {
      const path = paths.partition(lease.partition);
      const node = await getNode(zk, path);
      this.versions.delete(lease.token);
      // Only this grant is emptied: the version makes it a compare-and-set.
      if (!node || parseGrant(node.data)?.token !== lease.token || parseGrant(node.data)?.holderId !== lease.holderId) return;
      await multi(zk, [{ op: "set", path, data: "", version: node.stat.version }]);
    });
  }

  async inspect(resource: string, opts: CallOptions): Promise<ResourceState> {
    const paths = this.paths(resource);
    return this.call("inspect", opts, async (zk) => {
      const clock = touch(zk, paths.clock);
      const [planNode, grace, holderNames] = await Promise.all([getNode(zk, paths.plan), getNode(zk, paths.grace), children(zk, paths.holders)]);
      const now = await clock;
      if (!planNode || DELETED.test(planNode.data) || !now) return { stored: null, graceMs: 0, partitions: [], holders: [] };
      const stored = storedPlanOrThrow(resource, planNode.data);
      const nowMs = long(now.mtime);
      const pools = partitionPools(stored.plan);
      const [nodes, holders] = await Promise.all([
        Promise.all(pools.map((_, p) => getNode(zk, paths.partition(p)))),
        this.records(zk, paths, holderNames, nowMs, stored.plan.leaseTtlMs),
      ]);
      const partitions: PartitionState[] = pools.map((pool, partition) => {
        const node = nodes[partition] ?? null;
        const grant = node ? parseGrant(node.data) : null;
        const left = node && grant ? long(node.stat.mtime) + grant.ttlMs - nowMs : 0;
        return node && grant && left >= 0
          ? { partition, pool, holderId: grant.holderId, expiresInMs: left, fencingToken: long(node.stat.mzxid), epoch: grant.epoch }
          : { partition, pool, holderId: null, expiresInMs: null, fencingToken: null, epoch: null };
      });
      return { stored, graceMs: grace ? graceRemaining(grace, nowMs) : 0, partitions, holders };
    });
  }

  /**
   * Stops using the backend: later calls reject with BackendError, and the session is closed.
   * Leases and records stay until they expire, since a limiter may still admit on a lease until
   * its local deadline.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.drop();
  }

  /** One renewal: the plan's version and this instance's last write of the lease, or a read if unknown. */
  private async renew(zk: Client, checkPlan: TxnOp, path: string, lease: Lease, ttlMs: number): Promise<boolean> {
    const value = grantValue(lease.epoch, ttlMs, lease.token, lease.holderId);
    let version = this.versions.get(lease.token);
    for (let attempt = 0; attempt < 2; attempt++) {
      if (version === undefined) {
        // Granted through another instance, or this one's last write was lost with its reply.
        const node = await getNode(zk, path);
        if (!node || node.data !== value) return false;
        version = node.stat.version;
      }
      const result = await multi(zk, [checkPlan, { op: "set", path, data: value, version }]);
      if (result.ok) {
        this.versions.set(lease.token, result.stats.get(1)!.version);
        return true;
      }
      if (result.failed === 0) return false;
      version = undefined;
    }
    this.versions.delete(lease.token);
    return false;
  }

  /** Every live holder record among `names`, garbage-collecting expired ones. */
  private async records(zk: Client, paths: Paths, names: readonly string[], nowMs: number, ttlMs: number): Promise<PublishedHolder[]> {
    const nodes = await Promise.all(names.map((name) => getNode(zk, `${paths.holders}/${name}`)));
    const out: PublishedHolder[] = [];
    nodes.forEach((node, i) => {
      if (!node) return;
      const left = long(node.stat.mtime) + ttlMs - nowMs;
      if (left < 0) {
        // Expired a while ago: removed if nobody published it since (version check); best effort.
        if (left < -ttlMs) void multi(zk, [{ op: "remove", path: `${paths.holders}/${names[i]!}`, version: node.stat.version }]).catch(() => undefined);
        return;
      }
      const id = holderIdOf(names[i]!);
      const record = id === null ? null : decodeHolderRecord(id, node.data);
      if (record) out.push({ ...record, since: long(node.stat.czxid), expiresInMs: left });
    });
    return out.sort((a, b) => a.since - b.since);
  }

  /** The answer to a heartbeat under another plan or without one: nothing renewed or published. */
  private async unrenewed(zk: Client, resource: string, paths: Paths, leases: readonly Lease[], planNode: Node | null): Promise<HeartbeatResult> {
    const stored = planNode && !DELETED.test(planNode.data) ? storedPlanOrThrow(resource, planNode.data) : null;
    const clock = touch(zk, paths.clock);
    const [grace, names] = await Promise.all([getNode(zk, paths.grace), stored ? children(zk, paths.holders) : Promise.resolve([])]);
    const now = await clock;
    const nowMs = now ? long(now.mtime) : 0;
    const holders = stored && now ? await this.records(zk, paths, names, nowMs, stored.plan.leaseTtlMs) : [];
    return { renewed: leases.map(() => false), samePlan: false, epoch: stored?.epoch ?? null, graceMs: grace && now ? graceRemaining(grace, nowMs) : 0, holders };
  }

  /**
   * Writes a plan text with its grace, atomically, if the plan node is still `node` (its version,
   * or absent). A resource's first plan also creates its other nodes. False after a lost race.
   */
  private async writePlan(zk: Client, paths: Paths, node: Node | null, text: string, graceMs: number): Promise<boolean> {
    const grace = String(graceMs);
    if (node) {
      const current = await getNode(zk, paths.grace);
      const graceOp: TxnOp = current ? { op: "set", path: paths.grace, data: grace, version: current.stat.version } : { op: "create", path: paths.grace, data: grace };
      return (await multi(zk, [{ op: "set", path: paths.plan, data: text, version: node.stat.version }, graceOp])).ok;
    }
    await this.ensureRoot(zk);
    const base = await getNode(zk, paths.base);
    const ops: TxnOp[] = [
      ...(base ? [] : [{ op: "create", path: paths.base, data: "" } as const]),
      { op: "create", path: paths.plan, data: text },
      { op: "create", path: paths.grace, data: grace },
      { op: "create", path: paths.clock, data: "" },
      { op: "create", path: paths.partitions, data: "" },
      { op: "create", path: paths.holders, data: "" },
    ];
    const result = await multi(zk, ops);
    if (result.ok || !base || result.failed !== 1) return result.ok;
    // Hand-deleted plan under a kept base: recreate what is missing, one by one.
    for (const path of [paths.grace, paths.clock, paths.partitions, paths.holders]) await multi(zk, [{ op: "create", path, data: path === paths.grace ? grace : "" }]);
    const again = await getNode(zk, paths.grace);
    const retry: TxnOp[] = [{ op: "create", path: paths.plan, data: text }];
    if (again) retry.push({ op: "set", path: paths.grace, data: grace, version: again.stat.version });
    return (await multi(zk, retry)).ok;
  }

  /** Creates the root and the server identity once per session. */
  private async ensureRoot(zk: Client): Promise<void> {
    if (this.rooted) return;
    await mkdirp(zk, this.root);
    const id = await getNode(zk, this.serverPath);
    if (!id) await multi(zk, [{ op: "create", path: this.serverPath, data: randomUUID() }]);
    this.rooted = true;
  }

  /**
   * Whether the server went back in time under the same identity (a restore of older data seen by
   * this instance): then the backend-epoch grace is started on the resource (rule G2), unless one
   * at least as long runs already. A new identity (or none yet) only resets what was seen.
   */
  private async wentBack(zk: Client, server: Node | null, now: Stat, paths: Paths, planNode: Node, grace: Node): Promise<boolean> {
    const zxid = long(now.mzxid);
    if (!server) {
      await multi(zk, [{ op: "create", path: this.serverPath, data: randomUUID() }]).catch(() => undefined);
      this.seen = null;
      return false;
    }
    const id = server.data;
    const back = this.seen !== null && this.seen.id === id && zxid < this.seen.zxid;
    if (this.seen?.id !== id || zxid > this.seen.zxid) this.seen = { id, zxid };
    if (!back) return false;
    this.seen = { id, zxid };
    const stored = storedPlanOrThrow("(stored)", planNode.data);
    const graceMs = backendEpochGraceMs(stored.plan);
    if (graceRemaining(grace, long(now.mtime)) < graceMs) {
      await multi(zk, [
        { op: "check", path: paths.plan, version: planNode.stat.version },
        { op: "set", path: paths.grace, data: String(graceMs), version: grace.stat.version },
      ]);
    }
    return true;
  }

  /** Decodes and caches a stored plan node; PlanMismatchError when unreadable or from 0.1. */
  private remember(resource: string, node: Node): StoredPlan {
    const stored = storedPlanOrThrow(resource, node.data);
    this.plans.set(resource, { text: node.data, version: node.stat.version, stored });
    return stored;
  }

  /** Forgets the cached plan after this instance wrote it (the version is read again on next use). */
  private remembered(resource: string, stored: StoredPlan): StoredPlan {
    this.plans.delete(resource);
    return stored;
  }

  private checkedPlan(plan: Plan): Plan {
    const wanted = validatePlan(plan, "plan.");
    const rule = this.leaseTtlRule;
    if (wanted.leaseTtlMs < rule.minMs || wanted.leaseTtlMs > rule.maxMs) {
      throw new ConfigError("plan.leaseTtlMs", wanted.leaseTtlMs, `whole ms from ${rule.minMs} to ${rule.maxMs}`, rule.reason);
    }
    return wanted;
  }

  private get serverPath(): string {
    return `${this.root}/.server`;
  }

  private paths(resource: string): Paths {
    resourceName("resource", resource);
    const base = `${this.root}/${resource}`;
    return {
      base,
      plan: `${base}/plan`,
      grace: `${base}/grace`,
      clock: `${base}/clock`,
      partitions: `${base}/p`,
      holders: `${base}/h`,
      partition: (n) => `${base}/p/${n}`,
      holder: (id) => `${base}/h/${holderName(id)}`,
    };
  }

  /** The session, opening a new one when there is none or the last was dropped. */
  private async session(): Promise<Client> {
    if (this.client) return this.client;
    // Loaded on first use: the optional peer is needed only by those who use this backend.
    const { createClient } = (await import("node-zookeeper-client")) as typeof import("node-zookeeper-client");
    if (this.closed) throw new Error("the backend is closed");
    if (this.client) return this.client;
    const client = createClient(this.connectString, { sessionTimeout: this.sessionTimeoutMs, spinDelay: this.spinDelayMs, retries: 0 });
    // An expired session never revives; the next call opens another.
    client.once("expired", () => {
      if (this.client === client) this.drop();
    });
    // Since when it has had no connected session (its first handshake, or a reconnect).
    this.unconnectedSince = performance.now();
    client.on("connected", () => {
      if (this.client === client) this.unconnectedSince = null;
    });
    client.on("disconnected", () => {
      if (this.client === client) this.unconnectedSince ??= performance.now();
    });
    client.connect();
    this.client = client;
    return client;
  }

  /** Closes the session; its queued requests fail. Versions and plans read through it are forgotten. */
  private drop(): void {
    const client = this.client;
    this.client = null;
    this.rooted = false;
    this.plans.clear();
    this.versions.clear();
    this.unconnectedSince = null;
    if (client) retire(client);
  }

  /**
   * Runs `work` under the caller's signal and timeout (see backendCall). A call that fails after
   * the client has been without a connection for {@link RECONNECT_PATIENCE_MS} drops it: a client refused by a server that lost its data (its
   * zxid is below the one the client saw) retries for ever, and requests queued behind a long
   * partition would run late. No session holds anything of ours, so a new one costs nothing.
   */
  private call<T>(operation: string, opts: CallOptions, work: (zk: Client) => Promise<T>): Promise<T> {
    return backendCall(this.name, operation, opts, async (signal) => {
      if (this.closed) throw new Error("the backend is closed");
      const zk = await this.session();
      const onAbort = () => {
        const since = this.unconnectedSince;
        if (this.client === zk && since !== null && performance.now() - since >= RECONNECT_PATIENCE_MS) this.drop();
      };
      signal.addEventListener("abort", onAbort, { once: true });
      try {
        return await work(zk);
      } catch (error) {
        if (zkCode(error) === Code.SESSION_EXPIRED && this.client === zk) this.drop();
        throw error;
      } finally {
        signal.removeEventListener("abort", onAbort);
      }
    });
  }
}

interface Paths {
  readonly base: string;
  readonly plan: string;
  readonly grace: string;
  readonly clock: string;
  readonly partitions: string;
  readonly holders: string;
  partition(n: number): string;
  holder(holderId: string): string;
}

/** The last epoch a plan node holds: its plan's, or a deletion's (0 without a node). */
function lastEpoch(node: Node | null, decoded: ReturnType<typeof decodeStoredPlan> | null): number {
  if (!node) return 0;
  if (decoded?.kind === "plan") return decoded.stored.epoch;
  const deleted = DELETED.exec(node.data);
  return deleted ? Number(deleted[1]) : 0;
}

/** ms left of the grace node's grace at server time `nowMs`; a grace starts at the node's mtime. */
function graceRemaining(grace: Node, nowMs: number): number {
  const length = Number(grace.data);
  const ms = Number.isFinite(length) && length >= 0 ? length : MAX_LEASE_TTL_MS;
  return Math.max(0, long(grace.stat.mtime) + ms - nowMs);
}

function grantValue(epoch: number, ttlMs: number, token: string, holderId: string): string {
  return `${epoch} ${ttlMs} ${token} ${holderId}`;
}

function parseGrant(data: string): { epoch: number; ttlMs: number; token: string; holderId: string } | null {
  const m = /^(\d{1,16}) (\d{1,9}) (\S+) (\S+)$/.exec(data);
  return m ? { epoch: Number(m[1]), ttlMs: Number(m[2]), token: m[3]!, holderId: m[4]! } : null;
}

/**
 * Whether a partition node can be taken at server time `nowMs`: released, or its last write is
 * older than its TTL. An unreadable node counts as held for the longest TTL.
 */
function isFree(node: Node, nowMs: number): boolean {
  if (node.data === "") return true;
  const ttlMs = parseGrant(node.data)?.ttlMs ?? MAX_LEASE_TTL_MS;
  return nowMs > long(node.stat.mtime) + ttlMs;
}

/** A holder's node name: `_` and the URI-encoded id (ids may hold `/`; `_` avoids `.` and `..`). */
function holderName(holderId: string): string {
  return `_${encodeURIComponent(holderId)}`;
}

function holderIdOf(name: string): string | null {
  if (!name.startsWith("_")) return null;
  try {
    return decodeURIComponent(name.slice(1));
  } catch {
    return null;
  }
}

/** The internals of node-zookeeper-client 1.1.x that {@link retire} needs. */
interface ConnectionInternals {
  connect?: () => void;
  socket?: { destroy(): void };
}

/**
 * Closes a client without crashing the process. node-zookeeper-client 1.1.3 parses the server's
 * handshake reply as an ordinary reply once `close()` was called during the handshake, and throws
 * ("Unknown code") from its socket handler, uncatchably (found by test/faults/zookeeper-faults.test.ts).
 * So a connected client is closed; any other one stops reconnecting (its socket is destroyed, and
 * it never opens another), and is closed once a handshake already under way completes.
 */
function retire(client: Client): void {
  if (client.getState().name === "SYNC_CONNECTED") {
    client.close();
    return;
  }
  client.once("connected", () => client.close());
  const manager = (client as unknown as { connectionManager?: ConnectionInternals }).connectionManager;
  if (manager && typeof manager.connect === "function") {
    manager.connect = () => undefined;
    manager.socket?.destroy();
  }
}
