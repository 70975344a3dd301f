import { createHash, randomUUID } from "node:crypto";
import type { BlobItem, BlockBlobClient, ContainerClient, Metadata } from "@azure/storage-blob";
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
  HolderRecord,
  Lease,
  LeaseBackend,
  LeaseTtlRule,
  PartitionState,
  PublishedHolder,
  ResourceState,
} from "../contract/lease-backend.js";
import {
  decodeStoredPlan,
  encodeStoredPlan,
  partitionPools,
  storedPlanDigest,
  storedPlanOrThrow,
  validatePlan,
  type Plan,
  type StoredPlan,
} from "../contract/plan.js";
import { MAX_LEASE_TTL_MS, creationGraceMs, deletionGraceMs, switchGraceMs, type PlanHistory } from "../contract/timing.js";
import { backendCall } from "./backend-call.js";

/** Options of {@link AzureBlobLeaseBackend}. */
export interface AzureBlobLeaseBackendOptions {
  /**
   * The container the blobs live in (created on first `ensurePlan` if missing). Create its
   * service client with `retryOptions: { maxTries: 1 }`: with the SDK's default retries a call to
   * a refused port takes about 16 s to fail (measured), where one try fails in milliseconds and the
   * limiter retries on its own schedule. Per-call `timeoutMs`/`signal` is what bounds a server that
   * accepts connections but never answers: `tryTimeoutInMs` did not end such a request (measured
   * with @azure/storage-blob 12.32 against a SIGSTOPped Azurite: still pending after 45 s), while
   * the `abortSignal` this backend passes on every request does.
   */
  containerClient: ContainerClient;
  /** Prepended to every blob name, e.g. `"rate-limits/"` (default `""`). */
  prefix?: string;
}

/** Azure accepts lease durations of whole seconds from 15 to 60 (or infinite, which we never use). */
const MIN_LEASE_S = 15;
const MAX_LEASE_S = 60;
const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** One listing page holds up to 5000 blobs: plans up to about 4990 partitions (and their holders) list in one request. */
const PAGE_SIZE = 5000;
/** Azure's limit on all metadata names and values of one blob together. */
const METADATA_LIMIT = 8192;
/** Stale holder records one heartbeat deletes at most (the rest go in later heartbeats). */
const MAX_COLLECTED = 2;
/** Attempts of a plan write that loses compare-and-set races before the call gives up. */
const PLAN_WRITE_ATTEMPTS = 5;
/** Holder ids that are readable blob names as they are; others are stored base64url-encoded after a `~`. */
const PLAIN_HOLDER = /^[A-Za-z0-9_-][A-Za-z0-9._-]*$/;

/** Everything one listing of a resource's blobs shows. */
interface Listing {
  /** The server's time of the listing (its `Date` header, whole seconds), in ms since the epoch. */
  serverNow: number | undefined;
  plan: BlobItem | undefined;
  /** Grace blobs by grace id. */
  graces: Map<string, BlobItem>;
  partitions: Map<number, BlobItem>;
  /** Holder record blobs by holder id. */
  holders: Map<string, BlobItem>;
}

/** What the plan blob's metadata says (the content holds the full plan). */
type PlanHead =
  | { readonly kind: "plan"; readonly epoch: number; readonly partitions: number; readonly ttlMs: number; readonly digest: string }
  | { readonly kind: "deleted"; readonly epoch: number }
  | { readonly kind: "unreadable" };

/** The plan blob as downloaded. */
interface PlanBlob {
  readonly text: string;
  readonly metadata: Metadata;
  readonly etag: string;
}

/**
 * AzureBlobLeaseBackend grants leases as Azure Blob leases (works with Azurite). The blobs of a
 * resource live under `<prefix><resource>/`:
 * - `plan`: the stored plan, as {@link encodeStoredPlan} text; its metadata repeats the epoch, the
 *   partition count and the TTL (so that one listing answers `tryAcquire` and `heartbeat`) and
 *   carries the grace that the write started (`gracems`, `graceid`). Every write of it is a
 *   compare-and-set on its ETag. `deletePlan` turns it into a tombstone (empty, `deleted=1`, the
 *   epoch and the deletion grace kept), so a later plan gets a grace and a higher epoch.
 * - `p/<n>`: one 0-byte block blob per partition, created on first use; the lease id (a GUID this
 *   backend generates) is the lease token; its metadata holds holder, fencing token, epoch and TTL.
 * - `h/<holderId>`: one blob per holder whose metadata is its {@link HolderRecord}, leased for the
 *   plan's TTL by that holder (a lease id derived from resource and holder id, so any process
 *   running that holder renews it). Live means leased in the listing. Ids that are not plain blob
 *   names (`/`, `?`, `%`, …) are stored as `~` + base64url of the id.
 * - `g/<graceId>`: one blob per grace that a plan write started, leased for the grace (see below).
 *
 * Lease TTLs are whole seconds from 15000 to 60000 ms ({@link AzureBlobLeaseBackend.leaseTtlRule});
 * the limiter rejects others in its constructor, and every call rejects them with ConfigError
 * before sending anything.
 *
 * Graces. A plan write stores its grace `g` in the plan blob's own metadata, atomically with the
 * new epoch: from then on nothing is granted until the server's `Date` passes the blob's
 * Last-Modified + 1 s + `g` (both whole seconds, so this errs long by up to 2 s, never short).
 * Graces up to 60 s are then made exact by a lease: the writer creates `g/<graceId>` and leases it
 * for `ceil(g / 1 s)` seconds after the plan write; once that lease has expired the grace is over.
 * A grace blob that is not leased yet (the writer crashed in between) leaves the metadata rule in
 * force. Each grace has its own blob, so no writer can shorten another's lease. A new grace never
 * shortens a running one: the plan write takes the longer of the two (by the conservative bound,
 * so each plan write during a running grace may lengthen it by up to 2 s).
 *
 * Creation grace and freshness: a plan created where none was gets `creationGraceMs(plan,
 * history)` (60 s + one window for `"unknown"`, the TTL for `"lost"`), unless the backend proves that no lease
 * it granted on the resource can still be in use: no blob at all under the resource's name, and
 * the witness blob `<prefix>.witness` (created on first use, never written again) older than that
 * grace by the server's clock. Why that is sound: every lease lives on a blob under the resource's
 * name; this backend never deletes those (plans become tombstones, partition blobs stay; it
 * deletes only expired holder records and spent grace blobs, which hold no partition lease); and
 * Azure refuses to delete a leased blob without its lease id (412 LeaseIdMissing, checked on
 * Azurite), refuses a point-in-time restore of a range holding a leased blob, and refuses a
 * customer-managed account failover while a blob is leased (see the restore notes below). What
 * remains is losing the whole container (or an Azurite restart), and that takes the witness with
 * it: a new witness is younger than any lease that can still be in use. The listing is read
 * before the witness, so a loss between the two is seen.
 *
 * Requests per call (HTTP round trips; measured on Azurite by test/unit/azure-blob.test.ts, which
 * counts each request on the wire):
 * - `tryAcquire`: 1 listing (plan, graces, every partition's lease state and metadata, holders);
 *   that is all when the epoch differs, a grace runs or nothing is free. A grant adds 1 Lease Blob
 *   (acquire) + 1 Set Blob Metadata (holder, fence, epoch; conditional on the blob's ETag from the
 *   listing) = 3. Each candidate taken in a race since the listing adds 1; the first grant of a
 *   partition adds 2 (create its blob, list again to confirm the plan was not re-created meanwhile).
 * - `heartbeat` holding k leases: 1 listing, then in parallel k Lease Blob renewals + 1 Lease Blob
 *   on the holder blob + 1 Set Blob Metadata (the record) = k + 3 requests in 2 round trips (3 when
 *   the record is first published or re-published after it expired: create or lease it, then
 *   write). Each expired holder record removed adds 1 (at most 2 per heartbeat, only after a holder
 *   left). Under another epoch or without a plan: the listing only. Renewals of leases of another
 *   epoch, of leases the listing shows expired or taken, and of old-epoch partitions are refused
 *   without a request.
 * - `release`: 1. `readPlan`: 1. `inspect`: 2 in parallel (listing and plan).
 * - `ensurePlan`: 1 when the plan exists. Creating one: 1 read + 1 listing + 1 witness check + 1
 *   plan write = 4, + 2 (grace blob and its lease) when a grace of at most 60 s starts (a
 *   `"lost"` history's; the `"unknown"` one is longer and lives in the metadata alone), + 1 the
 *   first time the witness is created.
 * - `replacePlan`, `deletePlan`: 2 in parallel (plan and listing) + 1 plan write, + 2 (grace blob
 *   and its lease) when the grace is at most 60 s, + 1 per spent grace blob removed.
 * The listing grows with partitions and holders (about 1 KB of XML each).
 *
 * Epochs: a lease carries the epoch it was granted under (also in its blob's metadata). A
 * heartbeat renews only leases of the epoch it reads in its listing. A replacement that lands
 * between a heartbeat's listing and its renewals lets those renewals through once; that is safe
 * because the holder's deadline counts from when it sent the heartbeat, before the replacement,
 * so its admissions end before the switch grace (`previous.leaseTtlMs` + one window) does. The same
 * holds for a grant decided on a listing read just before a replacement. A plan blob whose epoch
 * went back (a point-in-time restore of the plan blob alone: it is never leased, so Azure allows
 * that while limiters run) is noticed from the listing: while a lease of a later epoch lives,
 * `tryAcquire` answers `grace`.
 *
 * Fencing tokens: a counter in each partition blob's metadata, written with the holder right
 * after the lease is acquired, conditional on the blob's ETag from the listing, so two grants never
 * get the same number; it grows with every grant of the partition (until the container is lost).
 *
 * Holder records: `since` is a revision, one more than the largest `since` among the resource's
 * holder blobs when the record is first published (or re-published after it expired), kept while
 * it lives; records published later have larger values. (Blob creation times have whole seconds
 * only, too coarse to order holders that start together.) `held` is stored as ranges
 * (`"0-3,7"`); a record that would still exceed Azure's 8 KB metadata limit is stored without it,
 * and readers take the partitions leased under that holder's name from the listing instead.
 * `expiresInMs` is estimated from the record blob's Last-Modified (whole seconds).
 *
 * Restores and failovers (why the conformance suite's snapshot-restore case does not apply): a
 * lease is state of the current blob, not of its data, so no Azure feature brings back a plan
 * while forgetting a live lease. Point-in-time restore of block blobs "will fail atomically" if a
 * blob in its range has an active lease (Azure docs, "Point-in-time restore for block blobs",
 * limitations); blob versions and snapshots are read-only copies of data and metadata without
 * leases, and promoting one is a Copy Blob onto the current blob, which needs the lease id while
 * it is leased; a customer-managed account failover "cannot proceed when there is a lease on a
 * blob" (Azure docs, "Disaster recovery and storage account failover"). Not covered by Microsoft's
 * documentation, and so not claimed: a Microsoft-managed failover after a regional disaster, which
 * loses the writes after the Last Sync Time. After one, stop the limiters for one TTL. Deleting the
 * container (or restarting Azurite, which keeps nothing) forgets plans and leases together:
 * limiters then get PlanMissingError or `epoch: null`, and the plan they store again starts the
 * creation grace for history `"lost"`. Lifecycle-management rules that delete blobs must not
 * cover the prefix. With blob versioning on, every record write and grant creates a version:
 * let a lifecycle rule delete previous versions under the prefix.
 *
 * Caveats: a call that fails after its lease was acquired (e.g. a timeout while recording the
 * holder) leaves the lease to expire by itself: capacity is idle for one TTL, never shared.
 * `inspect`'s `expiresInMs` for a partition is estimated from the grant's Last-Modified time
 * (whole seconds) because Azure does not report when a lease expires and renewals write nothing;
 * it is null (held, time unknown) once the first TTL since the grant has passed.
 */
export class AzureBlobLeaseBackend implements LeaseBackend {
  /** `"azure-blob"`. */
  readonly name = "azure-blob";
  /** Blob leases are the service's own: an expired one is never restored. */
  readonly revivesExpiredLeases = false;
  /** Whole seconds from 15 000 to 60 000 ms: Azure's lease durations. */
  readonly leaseTtlRule: LeaseTtlRule = {
    minMs: MIN_LEASE_S * 1000,
    maxMs: MAX_LEASE_S * 1000,
    stepMs: 1000,
    reason: "Azure Blob leases last whole seconds from 15 to 60 s",
  };
  private readonly container: ContainerClient;
  private readonly prefix: string;

  /** Creates a backend on an injected `ContainerClient`; it never closes that client. */
  constructor(options: AzureBlobLeaseBackendOptions) {
    if (typeof options?.containerClient?.getBlockBlobClient !== "function") {
      throw new ConfigError("containerClient", options?.containerClient, "a ContainerClient from @azure/storage-blob");
    }
    if (options.prefix !== undefined && typeof options.prefix !== "string") {
      throw new ConfigError("prefix", options.prefix, "a string");
    }
    this.container = options.containerClient;
    this.prefix = options.prefix ?? "";
  }

  /**
   * AzureBlobLeaseBackend.validateTtl checks that `ttlMs` is an Azure lease duration and returns it
   * in seconds; otherwise it throws ConfigError naming `leaseTtlMs` and the allowed range (the same
   * rule as {@link AzureBlobLeaseBackend.leaseTtlRule}).
   */
  static validateTtl(ttlMs: number): number {
    if (
      typeof ttlMs !== "number" ||
      !Number.isInteger(ttlMs) ||
      ttlMs % 1000 !== 0 ||
      ttlMs < MIN_LEASE_S * 1000 ||
      ttlMs > MAX_LEASE_S * 1000
    ) {
      throw new ConfigError(
        "leaseTtlMs",
        ttlMs,
        `a whole number of seconds from ${MIN_LEASE_S * 1000} to ${MAX_LEASE_S * 1000} ms`,
        "Azure Blob leases last 15-60 s",
      );
    }
    return ttlMs / 1000;
  }

  async ensurePlan(resource: string, plan: Plan, opts: EnsurePlanOptions): Promise<StoredPlan> {
    const wanted = validatePlan(plan, "plan.");
    AzureBlobLeaseBackend.validateTtl(wanted.leaseTtlMs);
    const history: PlanHistory = opts.history ?? "unknown";
    return this.call("ensurePlan", opts, async (signal) => {
      for (let attempt = 1; ; attempt++) {
        const current = await this.downloadPlan(resource, signal);
        if (current && !isTombstone(current.metadata)) return storedPlanOrThrow(resource, current.text);
        const created = await this.createPlan(resource, wanted, history, signal);
        if (created) return created;
        if (attempt >= PLAN_WRITE_ATTEMPTS) throw new Error(`the plan blob of "${resource}" kept changing while this client tried to create it`);
      }
    });
  }

  async readPlan(resource: string, opts: CallOptions): Promise<StoredPlan | null> {
    return this.call("readPlan", opts, async (signal) => {
      const current = await this.downloadPlan(resource, signal);
      return current && !isTombstone(current.metadata) ? storedPlanOrThrow(resource, current.text) : null;
    });
  }

  async replacePlan(resource: string, plan: Plan, opts: CallOptions & { expectedEpoch?: number }): Promise<StoredPlan> {
    const wanted = validatePlan(plan, "plan.");
    AzureBlobLeaseBackend.validateTtl(wanted.leaseTtlMs);
    return this.call("replacePlan", opts, async (signal) => {
      for (let attempt = 1; ; attempt++) {
        const [current, listing] = await Promise.all([this.downloadPlan(resource, signal), this.list(resource, signal)]);
        // Both must show the same version, or the running grace read from the listing could be another write's.
        if (!sameVersion(current, listing.plan)) {
          if (attempt >= PLAN_WRITE_ATTEMPTS) throw new Error(`the plan blob of "${resource}" kept changing during replacePlan`);
          continue;
        }
        const stored = current && !isTombstone(current.metadata) ? storedPlanOrThrow(resource, current.text) : null;
        if (opts.expectedEpoch !== undefined && (stored?.epoch ?? 0) !== opts.expectedEpoch) {
          throw new PlanMismatchError(resource, current?.text ?? "", "", `has epoch ${stored?.epoch ?? "none"}, not the expected ${opts.expectedEpoch}`);
        }
        const next: StoredPlan = { plan: wanted, epoch: epochOf(current) + 1 };
        const graceMs = Math.max(stored ? switchGraceMs(stored.plan, wanted) : creationGraceMs(wanted, "unknown"), graceLeftMs(listing));
        if (await this.writePlan(resource, { next }, graceMs, current, listing, signal)) return next;
        if (attempt >= PLAN_WRITE_ATTEMPTS) throw new Error(`the plan blob of "${resource}" kept changing during replacePlan`);
      }
    });
  }

  async deletePlan(resource: string, opts: CallOptions): Promise<boolean> {
    return this.call("deletePlan", opts, async (signal) => {
      for (let attempt = 1; ; attempt++) {
        const [current, listing] = await Promise.all([this.downloadPlan(resource, signal), this.list(resource, signal)]);
        if (!current || isTombstone(current.metadata)) return false;
        if (!sameVersion(current, listing.plan)) {
          if (attempt >= PLAN_WRITE_ATTEMPTS) throw new Error(`the plan blob of "${resource}" kept changing during deletePlan`);
          continue;
        }
        const decoded = decodeStoredPlan(current.text);
        // An unreadable plan tells nothing of its timing: wait as long as any lease can live.
        const own = decoded.kind === "plan" ? deletionGraceMs(decoded.stored.plan) : MAX_LEASE_TTL_MS;
        const tombstone = { deletedEpoch: epochOf(current) };
        if (await this.writePlan(resource, tombstone, Math.max(own, graceLeftMs(listing)), current, listing, signal)) return true;
        if (attempt >= PLAN_WRITE_ATTEMPTS) throw new Error(`the plan blob of "${resource}" kept changing during deletePlan`);
      }
    });
  }

  async tryAcquire(request: AcquireRequest, opts: CallOptions): Promise<AcquireResult> {
    const seconds = AzureBlobLeaseBackend.validateTtl(request.plan.plan.leaseTtlMs);
    const digest = storedPlanDigest(request.plan);
    return this.call("tryAcquire", opts, async (signal) => {
      const { resource, candidates } = request;
      const listing = await this.list(resource, signal);
      const head = await this.livePlanHead(resource, listing, signal);
      if (!head) throw new PlanMissingError(resource);
      const refusal = admission(listing, head, digest);
      if (refusal) return refusal;
      for (const partition of candidates) {
        if (!Number.isInteger(partition) || partition < 0 || partition >= head.partitions) continue;
        const item = listing.partitions.get(partition);
        if (item && isLeased(item)) continue;
        const outcome = await this.grant(request, digest, partition, seconds, item, signal);
        if (outcome !== "taken") return outcome;
      }
      return { kind: "taken" };
    });
  }

  async heartbeat(request: HeartbeatRequest, opts: CallOptions): Promise<HeartbeatResult> {
    const ttlMs = request.plan.plan.leaseTtlMs;
    AzureBlobLeaseBackend.validateTtl(ttlMs);
    const digest = storedPlanDigest(request.plan);
    return this.call("heartbeat", opts, async (signal) => {
      const { resource, leases } = request;
      const listing = await this.list(resource, signal);
      const notRenewed = leases.map(() => false);
      const head = await this.livePlanHead(resource, listing, signal);
      const graceMs = graceLeftMs(listing);
      if (!head) return { renewed: notRenewed, samePlan: false, epoch: null, graceMs, holders: [] };
      const others = liveHolders(listing, head);
      // Under another plan nothing is renewed and nothing published: the caller reads the plan anew.
      if (head.digest !== digest) return { renewed: notRenewed, samePlan: false, epoch: head.epoch, graceMs, holders: others };
      const holder = validateHolderRecord(request.holder, head.partitions);
      const [renewed, mine] = await Promise.all([
        Promise.all(leases.map((lease) => this.renew(lease, request, listing, head, signal))),
        this.publish(resource, holder, ttlMs, listing, signal),
        this.collectHolders(resource, holder.holderId, ttlMs, listing, signal),
      ]);
      // The container vanished between the listing and the writes: the plan is gone.
      if (!mine) return { renewed: notRenewed, samePlan: false, epoch: null, graceMs: 0, holders: [] };
      return { renewed, samePlan: true, epoch: head.epoch, graceMs, holders: [...others.filter((h) => h.holderId !== holder.holderId), mine] };
    });
  }

  async release(lease: Lease, opts: CallOptions): Promise<void> {
    return this.call("release", opts, async (signal) => {
      if (!GUID.test(lease.token)) return;
      try {
        await this.partitionBlob(lease.resource, lease.partition)
          .getBlobLeaseClient(lease.token)
          .releaseLease({ abortSignal: signal });
      } catch (error) {
        if (!hasStatus(error, 404, 409, 412)) throw error;
      }
    });
  }

  async inspect(resource: string, opts: CallOptions): Promise<ResourceState> {
    return this.call("inspect", opts, async (signal) => {
      const [listing, current] = await Promise.all([this.list(resource, signal), this.downloadPlan(resource, signal)]);
      const stored = current && !isTombstone(current.metadata) ? storedPlanOrThrow(resource, current.text) : null;
      const listed = listing.plan ? planHead(listing.plan) : undefined;
      // As in tryAcquire and heartbeat: a readable plan whose metadata is not goes by its content,
      // or its holders would be missing here while every heartbeat returns them.
      const head = listed?.kind === "plan" ? listed : stored && listed?.kind === "unreadable" ? headOf(stored) : undefined;
      const holders = head ? liveHolders(listing, head) : [];
      const graceMs = graceLeftMs(listing);
      if (!stored) return { stored: null, graceMs, partitions: [], holders };
      const partitions = partitionPools(stored.plan).map((pool, partition): PartitionState => {
        const item = listing.partitions.get(partition);
        if (!item || !isLeased(item)) return { partition, pool, holderId: null, expiresInMs: null, fencingToken: null, epoch: null };
        const metadata = item.metadata ?? {};
        const ttlMs = wholeNumber(metadata.leasettlms);
        const left = listing.serverNow !== undefined && ttlMs !== null ? item.properties.lastModified.getTime() + ttlMs - listing.serverNow : NaN;
        return {
          partition,
          pool,
          // The holder is recorded just after the lease is taken; in between it is not known yet.
          holderId: metadata.holder !== undefined ? safeDecode(metadata.holder) : "(unknown)",
          expiresInMs: left > 0 && ttlMs !== null ? Math.min(left, ttlMs) : null,
          fencingToken: wholeNumber(metadata.fence),
          epoch: wholeNumber(metadata.epoch),
        };
      });
      return { stored, graceMs, partitions, holders };
    });
  }

  async close(): Promise<void> {
    // Nothing of its own to close: the container client is the caller's.
  }

  // ---- the plan ------------------------------------------------------------------------------

  /**
   * Stores `wanted` as the next epoch where no plan (or a tombstone) is; null when another client
   * wrote the plan blob first (the caller reads it again).
   */
  private async createPlan(resource: string, wanted: Plan, history: PlanHistory, signal: AbortSignal): Promise<StoredPlan | null> {
    const listing = await this.list(resource, signal);
    if (listing.plan && !isTombstone(listing.plan.metadata ?? {})) return null;
    let graceMs = creationGraceMs(wanted, history);
    // The witness is read after the listing: a container lost in between shows as a young witness.
    const witnessAgeMs = await this.witnessAge(signal);
    const untouched = listing.plan === undefined && listing.graces.size === 0 && listing.partitions.size === 0 && listing.holders.size === 0;
    if (graceMs > 0 && untouched && witnessAgeMs !== null && witnessAgeMs >= graceMs + 1000) graceMs = 0;
    const next: StoredPlan = { plan: wanted, epoch: (wholeNumber(listing.plan?.metadata?.epoch) ?? 0) + 1 };
    const previous = listing.plan ? { etag: listing.plan.properties.etag } : null;
    return (await this.writePlan(resource, { next }, Math.max(graceMs, graceLeftMs(listing)), previous, listing, signal)) ? next : null;
  }

  /**
   * Writes the plan blob (the next plan, or a tombstone keeping the epoch) with the grace `graceMs`, conditional
   * on `previous`'s ETag (or on no blob existing), then makes the grace exact with a grace blob
   * lease and removes spent grace blobs. False when the condition failed.
   */
  private async writePlan(
    resource: string,
    write: { readonly next: StoredPlan } | { readonly deletedEpoch: number },
    graceMs: number,
    previous: { readonly etag: string | undefined } | null,
    listing: Listing,
    signal: AbortSignal,
  ): Promise<boolean> {
    const graceId = graceMs > 0 ? randomUUID() : "";
    const next = "next" in write ? write.next : null;
    const epoch = "next" in write ? write.next.epoch : write.deletedEpoch;
    const metadata: Metadata = { epoch: String(epoch), gracems: String(Math.ceil(graceMs)), graceid: graceId };
    if (next) {
      metadata.partitions = String(next.plan.partitions);
      metadata.leasettlms = String(next.plan.leaseTtlMs);
      // Requests are compared with the whole stored plan, which a listing does not show: its digest does.
      metadata.digest = storedPlanDigest(next);
    } else {
      metadata.deleted = "1";
    }
    const text = next ? encodeStoredPlan(next) : "";
    try {
      await this.planBlob(resource).upload(text, Buffer.byteLength(text), {
        conditions: previous ? { ifMatch: quoted(previous.etag) } : { ifNoneMatch: "*" },
        metadata,
        blobHTTPHeaders: { blobContentType: "application/json" },
        abortSignal: signal,
      });
    } catch (error) {
      if (hasStatus(error, 409, 412)) return false;
      if (isContainerMissing(error)) {
        // A lost container: the caller starts over, and the witness will be young.
        await this.container.createIfNotExists({ abortSignal: signal });
        return false;
      }
      throw error;
    }
    const spent = [...listing.graces].filter(([, item]) => !isLeased(item)).map(([id]) => id);
    await Promise.all([
      graceMs > 0 && graceMs <= MAX_LEASE_S * 1000 ? this.armGrace(resource, graceId, graceMs, signal) : undefined,
      ...spent.map((id) => this.deleteQuietly(this.graceBlob(resource, id), undefined, signal)),
    ]);
    return true;
  }

  /**
   * Leases `g/<graceId>` for the grace, rounded up to whole seconds (at least 15). Failures are
   * ignored: the plan blob's metadata keeps the grace in force, only less exactly.
   */
  private async armGrace(resource: string, graceId: string, graceMs: number, signal: AbortSignal): Promise<void> {
    const blob = this.graceBlob(resource, graceId);
    try {
      await blob.upload("", 0, { conditions: { ifNoneMatch: "*" }, abortSignal: signal });
      await blob.getBlobLeaseClient(randomUUID()).acquireLease(leaseSeconds(graceMs), { abortSignal: signal });
    } catch {
      if (signal.aborted) throw signal.reason;
    }
  }

  /**
   * The age of the witness blob by the server's clock, in ms; creates it (and the container) when
   * missing and answers null then.
   */
  private async witnessAge(signal: AbortSignal): Promise<number | null> {
    const witness = this.container.getBlockBlobClient(`${this.prefix}.witness`);
    try {
      const properties = await witness.getProperties({ abortSignal: signal });
      const created = properties.createdOn?.getTime();
      const now = properties.date?.getTime();
      return created !== undefined && now !== undefined ? now - created : null;
    } catch (error) {
      if (!hasStatus(error, 404)) throw error;
    }
    try {
      await this.withContainer(signal, () => witness.upload("", 0, { conditions: { ifNoneMatch: "*" }, abortSignal: signal }));
    } catch (error) {
      if (!hasStatus(error, 409, 412)) throw error;
    }
    return null;
  }

  /**
   * The plan head of the listing when it holds a live plan; null without one (or for a
   * tombstone). PlanMismatchError when the plan blob is unreadable (read in full for the message).
   */
  private async livePlanHead(resource: string, listing: Listing, signal: AbortSignal): Promise<Extract<PlanHead, { kind: "plan" }> | null> {
    if (!listing.plan) return null;
    const head = planHead(listing.plan);
    if (head.kind === "plan") return head;
    if (head.kind === "deleted") return null;
    const current = await this.downloadPlan(resource, signal);
    if (!current) return null;
    // A readable plan whose metadata is not (written by hand or by another tool): go by the content.
    return headOf(storedPlanOrThrow(resource, current.text));
  }

  /** The plan blob, or null when it (or the container) does not exist. */
  private async downloadPlan(resource: string, signal: AbortSignal): Promise<PlanBlob | null> {
    try {
      const response = await this.planBlob(resource).download(0, undefined, { abortSignal: signal });
      const chunks: Buffer[] = [];
      const body = response.readableStreamBody;
      if (body) for await (const chunk of body) chunks.push(typeof chunk === "string" ? Buffer.from(chunk) : (chunk as Buffer));
      return { text: Buffer.concat(chunks).toString("utf8"), metadata: response.metadata ?? {}, etag: response.etag ?? "" };
    } catch (error) {
      if (hasStatus(error, 404)) return null;
      throw error;
    }
  }

  // ---- leases --------------------------------------------------------------------------------

  /** Leases `partition` and records holder, fencing token and epoch; "taken" when someone else got it first. */
  private async grant(
    request: AcquireRequest,
    digest: string,
    partition: number,
    seconds: number,
    item: BlobItem | undefined,
    signal: AbortSignal,
  ): Promise<AcquireResult | "taken"> {
    const { resource, holderId } = request;
    const epoch = request.plan.epoch;
    const blob = this.partitionBlob(resource, partition);
    let etag = item?.properties.etag;
    let fence = wholeNumber(item?.metadata?.fence) ?? 0;
    // A blob we create ourselves could belong to a server that lost its state after our listing
    // (and now runs a new grace), so its grant is confirmed by a second listing.
    const confirm = item === undefined;
    if (confirm) {
      try {
        await blob.upload("", 0, { conditions: { ifNoneMatch: "*" }, abortSignal: signal });
      } catch (error) {
        if (isContainerMissing(error)) throw new PlanMissingError(resource);
        if (!hasStatus(error, 409, 412)) throw error;
      }
    }
    const leaseId = randomUUID();
    try {
      await blob.getBlobLeaseClient(leaseId).acquireLease(seconds, { abortSignal: signal });
    } catch (error) {
      if (hasStatus(error, 409)) return "taken";
      if (hasStatus(error, 404)) throw new PlanMissingError(resource);
      throw error;
    }
    try {
      const record = (tag: string | undefined) =>
        blob.setMetadata(
          { holder: encodeURIComponent(holderId), fence: String(fence + 1), epoch: String(epoch), leasettlms: String(seconds * 1000) },
          { conditions: { leaseId, ifMatch: quoted(tag) }, abortSignal: signal },
        );
      let recorded = false;
      if (!confirm && etag !== undefined) {
        try {
          // Lease calls leave the ETag alone, so a match proves no one wrote (or re-created) the
          // blob since the listing: the listed plan, grace and fence still hold.
          await record(etag);
          recorded = true;
        } catch (error) {
          if (!hasStatus(error, 412)) throw error;
        }
      }
      if (!recorded) {
        const again = await this.list(resource, signal);
        const head = again.plan ? planHead(again.plan) : undefined;
        if (head?.kind !== "plan") {
          await releaseQuietly(blob, leaseId, signal);
          throw new PlanMissingError(resource);
        }
        const refusal = admission(again, head, digest);
        if (refusal) {
          await releaseQuietly(blob, leaseId, signal);
          return refusal;
        }
        const current = again.partitions.get(partition);
        etag = current?.properties.etag;
        fence = wholeNumber(current?.metadata?.fence) ?? 0;
        // While we hold the lease no one else can write the blob, so this cannot race.
        await record(etag);
      }
    } catch (error) {
      if (!signal.aborted && !PlanMissingError.is(error)) await releaseQuietly(blob, leaseId, signal);
      throw error;
    }
    return { kind: "granted", lease: { resource, partition, holderId, token: leaseId, fencingToken: fence + 1, epoch } };
  }

  /** Renews one lease of a heartbeat; false without a request when the listing shows it cannot be ours. */
  private async renew(lease: Lease, request: HeartbeatRequest, listing: Listing, head: Extract<PlanHead, { kind: "plan" }>, signal: AbortSignal): Promise<boolean> {
    if (lease.resource !== request.resource || lease.epoch !== head.epoch || !GUID.test(lease.token)) return false;
    if (!Number.isInteger(lease.partition) || lease.partition < 0 || lease.partition >= head.partitions) return false;
    const item = listing.partitions.get(lease.partition);
    // Expired (Azure would renew an expired lease nobody took; the contract says it is lost),
    // taken by someone else, or granted under another epoch.
    if (!item || item.properties.leaseState !== "leased" || wholeNumber(item.metadata?.epoch) !== head.epoch) return false;
    try {
      await this.partitionBlob(lease.resource, lease.partition).getBlobLeaseClient(lease.token).renewLease({ abortSignal: signal });
      return true;
    } catch (error) {
      // 409: another lease id holds it or it was released; 404: the blob (or the server's state) is gone.
      if (hasStatus(error, 404, 409, 412)) return false;
      throw error;
    }
  }

  // ---- holder records ------------------------------------------------------------------------

  /**
   * Publishes `holder`'s record on its blob and (re)leases the blob for `ttlMs`; null when the
   * container is gone.
   */
  private async publish(
    resource: string,
    holder: HolderRecord,
    ttlMs: number,
    listing: Listing,
    signal: AbortSignal,
  ): Promise<PublishedHolder | null> {
    const item = listing.holders.get(holder.holderId);
    const live = item !== undefined && isLeased(item);
    const kept = live ? wholeNumber(item.metadata?.since) : null;
    const since = kept !== null && kept > 0 ? kept : maxSince(listing) + 1;
    const metadata = holderMetadata(holder, since);
    const blob = this.holderBlob(resource, holder.holderId);
    const lease = blob.getBlobLeaseClient(holderLeaseId(this.prefix, resource, holder.holderId));
    const seconds = ttlMs / 1000;
    const write = () => blob.setMetadata(metadata, { conditions: { leaseId: lease.leaseId }, abortSignal: signal });
    // As every other process will read it back (demand and rate are stored rounded), so that all
    // of them see the same record; `held` stays the claimed list, which the metadata may omit.
    const stored = decodeHolderRecord(holder.holderId, metadata.record ?? "") ?? holder;
    const published: PublishedHolder = { ...stored, held: holder.held, since, expiresInMs: ttlMs };
    try {
      if (live) {
        // Ours and leased: extend the lease and write the record at once.
        const [leased, written] = await Promise.allSettled([lease.acquireLease(seconds, { abortSignal: signal }), write()]);
        if (leased.status === "rejected") throw leased.reason;
        // The lease ran out between the listing and the write: write again under the new lease.
        if (written.status === "rejected") {
          if (!hasStatus(written.reason, 412)) throw written.reason;
          await write();
        }
        return published;
      }
      if (item) {
        try {
          await lease.acquireLease(seconds, { abortSignal: signal });
          await write();
          return published;
        } catch (error) {
          // Removed as expired by another holder since the listing: create it anew below.
          if (!hasStatus(error, 404) || isContainerMissing(error)) throw error;
        }
      }
      try {
        await blob.upload("", 0, { metadata, conditions: { ifNoneMatch: "*" }, abortSignal: signal });
        await lease.acquireLease(seconds, { abortSignal: signal });
      } catch (error) {
        if (!hasStatus(error, 409, 412)) throw error;
        // Created meanwhile by another process running this holder id: lease it and write.
        await lease.acquireLease(seconds, { abortSignal: signal });
        await write();
      }
      return published;
    } catch (error) {
      if (isContainerMissing(error)) return null;
      throw error;
    }
  }

  /** Deletes up to {@link MAX_COLLECTED} records that expired more than one TTL ago (never `self`'s). */
  private async collectHolders(resource: string, self: string, ttlMs: number, listing: Listing, signal: AbortSignal): Promise<void> {
    const now = listing.serverNow;
    if (now === undefined) return;
    const stale = [...listing.holders]
      .filter(([id, item]) => id !== self && !isLeased(item) && now - item.properties.lastModified.getTime() > ttlMs + 1000)
      .sort((a, b) => a[1].properties.lastModified.getTime() - b[1].properties.lastModified.getTime())
      .slice(0, MAX_COLLECTED);
    // Conditional on the ETag: a holder that came back (leased, or wrote its record) keeps its blob.
    await Promise.all(stale.map(([id, item]) => this.deleteQuietly(this.holderBlob(resource, id), item.properties.etag, signal)));
  }

  // ---- listing and names ---------------------------------------------------------------------

  /** Lists every blob of `resource` with lease state and metadata (one request per 5000 blobs). */
  private async list(resource: string, signal: AbortSignal): Promise<Listing> {
    const base = this.base(resource);
    const listing: Listing = { serverNow: undefined, plan: undefined, graces: new Map(), partitions: new Map(), holders: new Map() };
    try {
      const pages = this.container.listBlobsFlat({ prefix: base, includeMetadata: true, abortSignal: signal }).byPage({ maxPageSize: PAGE_SIZE });
      for await (const page of pages) {
        listing.serverNow ??= page.date?.getTime();
        for (const item of page.segment.blobItems) {
          const name = item.name.slice(base.length);
          if (name === "plan") listing.plan = item;
          else if (name.startsWith("g/")) listing.graces.set(name.slice(2), item);
          else if (name.startsWith("h/")) {
            const id = holderIdOf(name.slice(2));
            if (id !== null) listing.holders.set(id, item);
          } else if (/^p\/(0|[1-9]\d{0,8})$/.test(name)) listing.partitions.set(Number(name.slice(2)), item);
        }
      }
    } catch (error) {
      if (!isContainerMissing(error)) throw error;
    }
    return listing;
  }

  /** Runs `write`; if the container does not exist (first use, or a server that lost its state), creates it and runs `write` again. */
  private async withContainer<T>(signal: AbortSignal, write: () => Promise<T>): Promise<T> {
    try {
      return await write();
    } catch (error) {
      if (!isContainerMissing(error)) throw error;
      await this.container.createIfNotExists({ abortSignal: signal });
      return write();
    }
  }

  private async deleteQuietly(blob: BlockBlobClient, etag: string | undefined, signal: AbortSignal): Promise<void> {
    try {
      await blob.delete({ conditions: etag === undefined ? {} : { ifMatch: quoted(etag) }, abortSignal: signal });
    } catch (error) {
      // Gone already, leased again or rewritten: nothing to remove.
      if (!hasStatus(error, 404, 409, 412)) throw error;
    }
  }

  private base(resource: string): string {
    return `${this.prefix}${resource}/`;
  }

  private planBlob(resource: string): BlockBlobClient {
    return this.container.getBlockBlobClient(`${this.base(resource)}plan`);
  }

  private graceBlob(resource: string, graceId: string): BlockBlobClient {
    return this.container.getBlockBlobClient(`${this.base(resource)}g/${graceId}`);
  }

  private partitionBlob(resource: string, partition: number): BlockBlobClient {
    return this.container.getBlockBlobClient(`${this.base(resource)}p/${partition}`);
  }

  private holderBlob(resource: string, holderId: string): BlockBlobClient {
    return this.container.getBlockBlobClient(`${this.base(resource)}h/${holderBlobName(holderId)}`);
  }

  private call<T>(operation: string, opts: CallOptions, work: (signal: AbortSignal) => Promise<T>): Promise<T> {
    return backendCall(this.name, operation, opts, work);
  }
}

// ---- plan metadata and graces ----------------------------------------------------------------

function planHead(item: BlobItem): PlanHead {
  const metadata = item.metadata ?? {};
  const epoch = wholeNumber(metadata.epoch);
  if (isTombstone(metadata)) return { kind: "deleted", epoch: epoch ?? 0 };
  if (epoch === null || epoch < 1) return { kind: "unreadable" };
  const partitions = wholeNumber(metadata.partitions);
  const ttlMs = wholeNumber(metadata.leasettlms);
  const digest = metadata.digest;
  if (partitions === null || partitions < 1 || ttlMs === null || typeof digest !== "string") return { kind: "unreadable" };
  return { kind: "plan", epoch, partitions, ttlMs, digest };
}

/** The plan head a stored plan's own metadata would show. */
function headOf(stored: StoredPlan): Extract<PlanHead, { kind: "plan" }> {
  return { kind: "plan", epoch: stored.epoch, partitions: stored.plan.partitions, ttlMs: stored.plan.leaseTtlMs, digest: storedPlanDigest(stored) };
}

function isTombstone(metadata: Metadata): boolean {
  return metadata.deleted === "1";
}

/**
 * Why nothing may be granted under the listed plan, or null when a grant may be tried. A live
 * lease of a later epoch than the plan's means the plan blob went back in time (restored alone,
 * or written by hand): nothing is granted until such leases, which are never renewed, have expired.
 */
function admission(listing: Listing, head: Extract<PlanHead, { kind: "plan" }>, digest: string): AcquireResult | null {
  if (head.digest !== digest) return { kind: "plan-changed", epoch: head.epoch };
  const graceMs = graceLeftMs(listing);
  if (graceMs > 0) return { kind: "grace", remainingMs: graceMs };
  for (const item of listing.partitions.values()) {
    if (isLeased(item) && (wholeNumber(item.metadata?.epoch) ?? 0) > head.epoch) return { kind: "grace", remainingMs: head.ttlMs };
  }
  return null;
}

/**
 * ms left of the grace the plan blob's last write started, 0 when none. The metadata bound is
 * conservative (server times have whole seconds: up to 2 s long); a grace of up to 60 s whose
 * grace blob has been leased ends when that lease has expired.
 */
function graceLeftMs(listing: Listing): number {
  const plan = listing.plan;
  const graceMs = wholeNumber(plan?.metadata?.gracems);
  if (!plan || graceMs === null || graceMs <= 0) return 0;
  const bound = listing.serverNow === undefined ? graceMs : plan.properties.lastModified.getTime() + 1000 + graceMs - listing.serverNow;
  if (bound <= 0) return 0;
  const graceId = plan.metadata?.graceid;
  const blob = graceId ? listing.graces.get(graceId) : undefined;
  const state = blob?.properties.leaseState;
  if (graceMs <= MAX_LEASE_S * 1000 && (state === "expired" || state === "broken")) return 0;
  return bound;
}

function leaseSeconds(ms: number): number {
  return Math.min(MAX_LEASE_S, Math.max(MIN_LEASE_S, Math.ceil(ms / 1000)));
}

function epochOf(current: PlanBlob | null): number {
  if (!current) return 0;
  const fromMetadata = wholeNumber(current.metadata.epoch);
  if (fromMetadata !== null) return fromMetadata;
  const decoded = decodeStoredPlan(current.text);
  return decoded.kind === "plan" ? decoded.stored.epoch : 0;
}

/** Whether the downloaded plan blob and the listed one are the same write. */
function sameVersion(current: PlanBlob | null, item: BlobItem | undefined): boolean {
  if (!current || !item) return !current && !item;
  return unquoted(current.etag) === unquoted(item.properties.etag);
}

// ---- holder records --------------------------------------------------------------------------

/** The metadata of a holder blob: the record (without `held`), `held` as ranges, and `since`. */
function holderMetadata(holder: HolderRecord, since: number): Metadata {
  const metadata: Metadata = { record: encodeHolderRecord({ ...holder, held: [] }), held: encodeRanges(holder.held), since: String(since) };
  // Too large for Azure's metadata limit: readers take the holder's partitions from the leases.
  if (metadataSize(metadata) > METADATA_LIMIT - 512) metadata.held = "*";
  return metadata;
}

function liveHolders(listing: Listing, head: Extract<PlanHead, { kind: "plan" }>): PublishedHolder[] {
  const out: PublishedHolder[] = [];
  for (const [holderId, item] of listing.holders) {
    if (!isLeased(item)) continue;
    const metadata = item.metadata ?? {};
    const record = metadata.record === undefined ? null : decodeHolderRecord(holderId, metadata.record);
    const since = wholeNumber(metadata.since);
    const held = metadata.held === "*" ? leasedBy(listing, head, holderId) : decodeRanges(metadata.held ?? "");
    if (!record || since === null || !held) continue;
    const left = listing.serverNow === undefined ? NaN : item.properties.lastModified.getTime() + head.ttlMs - listing.serverNow;
    out.push({ ...record, held, since, expiresInMs: left > 0 ? Math.min(left, head.ttlMs) : null });
  }
  return out;
}

function leasedBy(listing: Listing, head: Extract<PlanHead, { kind: "plan" }>, holderId: string): number[] {
  const held: number[] = [];
  for (const [partition, item] of listing.partitions) {
    if (partition < head.partitions && isLeased(item) && item.metadata?.holder !== undefined && safeDecode(item.metadata.holder) === holderId) held.push(partition);
  }
  return held.sort((a, b) => a - b);
}

function maxSince(listing: Listing): number {
  let max = 0;
  for (const item of listing.holders.values()) max = Math.max(max, wholeNumber(item.metadata?.since) ?? 0);
  return max;
}

/** `[0,1,2,3,7]` → `"0-3,7"`. */
function encodeRanges(values: readonly number[]): string {
  const sorted = [...new Set(values)].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j]! + 1) j++;
    parts.push(j === i ? String(sorted[i]) : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return parts.join(",");
}

/** The inverse of {@link encodeRanges}; null when `text` is not such a list. */
function decodeRanges(text: string): number[] | null {
  if (text === "") return [];
  const out: number[] = [];
  for (const part of text.split(",")) {
    const match = /^(\d{1,9})(?:-(\d{1,9}))?$/.exec(part);
    if (!match) return null;
    const from = Number(match[1]);
    const to = match[2] === undefined ? from : Number(match[2]);
    if (to < from || to - from > 100_000) return null;
    for (let p = from; p <= to; p++) out.push(p);
  }
  return out;
}

function metadataSize(metadata: Metadata): number {
  return Object.entries(metadata).reduce((sum, [k, v]) => sum + k.length + v.length, 0);
}

/** A holder id as a blob name: readable when it is safe as one, else `~` + base64url. */
function holderBlobName(holderId: string): string {
  return PLAIN_HOLDER.test(holderId) && !holderId.endsWith(".") ? holderId : `~${Buffer.from(holderId, "utf8").toString("base64url")}`;
}

function holderIdOf(name: string): string | null {
  if (!name.startsWith("~")) return name.length > 0 ? name : null;
  const id = Buffer.from(name.slice(1), "base64url").toString("utf8");
  return id.length > 0 && holderBlobName(id) === name ? id : null;
}

/** The lease id of a holder's record blob: derived, so every process running that holder id can renew it. */
function holderLeaseId(prefix: string, resource: string, holderId: string): string {
  const hex = createHash("sha256").update(`partitioned-rate-limiter holder\n${prefix}${resource}\n${holderId}`).digest("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

// ---- small helpers ---------------------------------------------------------------------------

function isLeased(item: BlobItem): boolean {
  // "breaking" still excludes others until the break period ends.
  return item.properties.leaseState === "leased" || item.properties.leaseState === "breaking";
}

function wholeNumber(value: string | undefined): number | null {
  return value !== undefined && /^\d{1,15}$/.test(value) ? Number(value) : null;
}

function safeDecode(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

/** ETags from listings come without quotes; conditions take the quoted form. */
function quoted(etag: string | undefined): string | undefined {
  return etag === undefined || etag.startsWith('"') ? etag : `"${etag}"`;
}

function unquoted(etag: string | undefined): string | undefined {
  return etag?.replace(/^"|"$/g, "");
}

async function releaseQuietly(blob: BlockBlobClient, leaseId: string, signal: AbortSignal): Promise<void> {
  try {
    await blob.getBlobLeaseClient(leaseId).releaseLease({ abortSignal: signal });
  } catch {
    // The lease then expires by itself; nothing else is at stake.
  }
}

function isContainerMissing(error: unknown): boolean {
  return hasStatus(error, 404) && errorCode(error) === "ContainerNotFound";
}

function hasStatus(error: unknown, ...statuses: number[]): boolean {
  const status = typeof error === "object" && error !== null ? (error as { statusCode?: unknown }).statusCode : undefined;
  return typeof status === "number" && statuses.includes(status);
}

function errorCode(error: unknown): string | undefined {
  const code = typeof error === "object" && error !== null ? (error as { code?: unknown }).code : undefined;
  return typeof code === "string" ? code : undefined;
}
