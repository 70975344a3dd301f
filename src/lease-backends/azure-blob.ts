import { randomUUID } from "node:crypto";
import type { BlobItem, BlockBlobClient, ContainerClient } from "@azure/storage-blob";
import { BackendError } from "../errors/backend-error.js";
import { ConfigError } from "../errors/config-error.js";
import { PartitionedRateLimiterError } from "../errors/partitioned-rate-limiter-error.js";
import { PlanMismatchError } from "../errors/plan-mismatch-error.js";
import { PlanMissingError } from "../errors/plan-missing-error.js";
import { canonicalPlan, parsePlan, partitionPools, type Plan } from "../contract/plan.js";
import { withDeadline } from "./call-deadline.js";
import type { CallOptions, EnsurePlanOptions, Lease, LeaseBackend, PartitionState } from "../contract/lease-backend.js";

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
/** Blob names are at most 1024 characters; listing 5000 per page covers plans up to 4998 partitions in one request. */
const PAGE_SIZE = 5000;

/** What one listing of a resource's blobs shows. */
interface Snapshot {
  /** The server's time of the listing (its `Date` header, whole seconds), in ms since the epoch. */
  serverNow: number | undefined;
  plan: BlobItem | undefined;
  grace: BlobItem | undefined;
  partitions: Map<number, BlobItem>;
}

type Operation = "ensurePlan" | "readPlan" | "tryAcquire" | "renew" | "release" | "inspect";

/**
 * AzureBlobLeaseBackend grants leases as Azure Blob leases (works with Azurite): one 0-byte block
 * blob per partition, `<prefix><resource>/p/<n>`, created on first use; the lease id (a GUID this
 * backend generates) is the lease token. The plan is the blob `<prefix><resource>/plan`; a grace
 * period is a lease on `<prefix><resource>/grace`.
 *
 * Lease TTLs must be whole seconds from 15000 to 60000 ms (an Azure limit); other values reject
 * with ConfigError (see {@link AzureBlobLeaseBackend.validateTtl}). Azure renews a lease to the
 * duration it was acquired with, so `renew` rejects a TTL longer than that (a shorter one is safe:
 * the server then holds the lease longer than the limiter uses it).
 *
 * Requests per call (HTTP round trips, sequential unless noted):
 * - `tryAcquire`: 1 listing of the resource's blobs (plan, grace, lease state and metadata of every
 *   partition) — and that is all when nothing is free or a grace period runs; otherwise + 1 Lease
 *   Blob (acquire) + 1 Set Blob Metadata (holder, fencing token) = 3. Each candidate taken in a race
 *   since the listing adds 1; the first grant of a partition adds 2 (create the blob, list again to
 *   confirm the plan was not re-created meanwhile).
 * - `renew`: 1 (Lease Blob renew). `release`: 1 (Lease Blob release).
 * - `ensurePlan`: 1 (read the plan) when it exists; 4 when it creates it (grace blob, its lease, plan).
 * - `readPlan`: 1. `inspect`: 2, in parallel (listing and plan).
 * The listing grows with the partition count (about 1 KB of XML per partition).
 *
 * Fencing tokens: a counter in each partition blob's metadata, written with the holder id right
 * after the lease is acquired, conditional on the blob's ETag from the listing, so two grants never
 * get the same number; it grows with every grant of the partition (until the server loses its state).
 *
 * Caveats: Azure renews an expired lease when nobody has taken it since; the lease is then still
 * ours and `renew` reports true. A call that fails after its lease was acquired (e.g. a timeout
 * while recording the holder) leaves the lease to expire by itself: capacity is idle for one TTL,
 * never shared. `inspect`'s `expiresInMs` is estimated from the grant's Last-Modified time
 * (second resolution) because Azure does not report when a lease expires and renewals write
 * nothing; it is null (held, time unknown) once the first TTL since the grant has passed.
 * Grace periods of up to 60 s are a lease on the grace blob; longer ones are also recorded in its
 * metadata and compared with the server's `Date` header (conservatively, up to 2 s longer).
 */
export class AzureBlobLeaseBackend implements LeaseBackend {
  /** `"azure-blob"`. */
  readonly name = "azure-blob";
  private readonly container: ContainerClient;
  private readonly prefix: string;
  /** The lease duration (s) of each grant this instance made, to refuse renewals that would promise more. */
  private readonly durations = new Map<string, number>();

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
   * in seconds; otherwise it throws ConfigError naming `leaseTtlMs` and the allowed range.
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

  async ensurePlan(resource: string, plan: Plan, opts: EnsurePlanOptions): Promise<void> {
    return this.call("ensurePlan", opts, async (signal) => {
      const wanted = canonicalPlan(plan);
      const stored = await this.downloadPlan(resource, signal);
      if (stored !== null) return verifyPlan(resource, stored, wanted);
      // The grace starts before the plan exists, so no one can be granted a lease in between.
      if (opts.graceMs > 0) await this.startGrace(resource, opts.graceMs, signal);
      const created = await this.withContainer(signal, async () => {
        try {
          await this.blob(resource, "plan").upload(wanted, Buffer.byteLength(wanted), {
            conditions: { ifNoneMatch: "*" },
            metadata: { partitions: String(plan.partitions) },
            blobHTTPHeaders: { blobContentType: "application/json" },
            abortSignal: signal,
          });
          return true;
        } catch (error) {
          if (hasStatus(error, 409, 412)) return false;
          throw error;
        }
      });
      if (created) return;
      const raced = await this.downloadPlan(resource, signal);
      if (raced === null) throw new Error("the plan blob vanished right after another client created it");
      verifyPlan(resource, raced, wanted);
    });
  }

  async readPlan(resource: string, opts: CallOptions): Promise<Plan | null> {
    return this.call("readPlan", opts, async (signal) => {
      const stored = await this.downloadPlan(resource, signal);
      return stored === null ? null : parsePlan(stored);
    });
  }

  async tryAcquire(
    resource: string,
    candidates: readonly number[],
    holderId: string,
    ttlMs: number,
    opts: CallOptions,
  ): Promise<Lease | null> {
    const seconds = AzureBlobLeaseBackend.validateTtl(ttlMs);
    return this.call("tryAcquire", opts, async (signal) => {
      const snapshot = await this.list(resource, signal);
      if (!snapshot.plan) throw new PlanMissingError(resource);
      if (graceActive(snapshot)) return null;
      const partitions = await this.partitionCount(resource, snapshot.plan, signal);
      for (const partition of candidates) {
        if (!Number.isInteger(partition) || partition < 0 || partition >= partitions) continue;
        const item = snapshot.partitions.get(partition);
        if (item && isLeased(item)) continue;
        const outcome = await this.grant(resource, partition, holderId, seconds, snapshot, item, signal);
        if (outcome !== "taken") return outcome;
      }
      return null;
    });
  }

  async renew(lease: Lease, ttlMs: number, opts: CallOptions): Promise<boolean> {
    const seconds = AzureBlobLeaseBackend.validateTtl(ttlMs);
    const acquired = this.durations.get(lease.token);
    if (acquired !== undefined && seconds > acquired) {
      throw new ConfigError(
        "leaseTtlMs",
        ttlMs,
        `at most ${acquired * 1000} ms, the TTL this lease was acquired with`,
        "Azure renews a lease to its original duration",
      );
    }
    return this.call("renew", opts, async (signal) => {
      if (!GUID.test(lease.token)) return false;
      try {
        await this.partitionBlob(lease.resource, lease.partition)
          .getBlobLeaseClient(lease.token)
          .renewLease({ abortSignal: signal });
        return true;
      } catch (error) {
        // 409: another lease id holds it or it was released; 404: the blob (or the server's state) is gone.
        if (hasStatus(error, 404, 409, 412)) {
          this.durations.delete(lease.token);
          return false;
        }
        throw error;
      }
    });
  }

  async release(lease: Lease, opts: CallOptions): Promise<void> {
    return this.call("release", opts, async (signal) => {
      this.durations.delete(lease.token);
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

  async inspect(resource: string, opts: CallOptions): Promise<PartitionState[]> {
    return this.call("inspect", opts, async (signal) => {
      const [snapshot, stored] = await Promise.all([this.list(resource, signal), this.downloadPlan(resource, signal)]);
      const plan = stored === null ? null : parsePlan(stored);
      if (!plan) return [];
      return partitionPools(plan).map((pool, partition) => {
        const item = snapshot.partitions.get(partition);
        if (!item || !isLeased(item)) return { partition, pool, holderId: null, expiresInMs: null, fencingToken: null };
        const metadata = item.metadata ?? {};
        const ttlS = Number(metadata.ttl);
        const left =
          snapshot.serverNow !== undefined && Number.isFinite(ttlS)
            ? item.properties.lastModified.getTime() + ttlS * 1000 - snapshot.serverNow
            : NaN;
        return {
          partition,
          pool,
          // The holder is recorded just after the lease is taken; in between it is not known yet.
          holderId: metadata.holder !== undefined ? decodeURIComponent(metadata.holder) : "(unknown)",
          expiresInMs: left > 0 ? Math.min(left, ttlS * 1000) : null,
          fencingToken: metadata.fence !== undefined && /^\d+$/.test(metadata.fence) ? Number(metadata.fence) : null,
        };
      });
    });
  }

  async close(): Promise<void> {
    this.durations.clear();
  }

  /** Leases `partition` and records holder and fencing token; "taken" when someone else got it first. */
  private async grant(
    resource: string,
    partition: number,
    holderId: string,
    seconds: number,
    snapshot: Snapshot,
    item: BlobItem | undefined,
    signal: AbortSignal,
  ): Promise<Lease | null | "taken"> {
    const blob = this.partitionBlob(resource, partition);
    let etag = item?.properties.etag;
    let fence = fenceOf(item);
    // A blob we create ourselves could belong to a server that lost its state after our listing
    // (and now runs a new grace period), so its grant is confirmed by a second listing.
    let confirm = false;
    if (!item) {
      confirm = true;
      try {
        await blob.upload("", 0, { conditions: { ifNoneMatch: "*" }, abortSignal: signal });
      } catch (error) {
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
          { holder: encodeURIComponent(holderId), fence: String(fence + 1), ttl: String(seconds) },
          { conditions: { leaseId, ifMatch: tag }, abortSignal: signal },
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
        if (!again.plan || again.plan.properties.etag !== snapshot.plan?.properties.etag || graceActive(again)) {
          await releaseQuietly(blob, leaseId, signal);
          if (!again.plan) throw new PlanMissingError(resource);
          return null;
        }
        const current = again.partitions.get(partition);
        etag = current?.properties.etag;
        fence = fenceOf(current);
        // While we hold the lease no one else can write the blob, so this cannot race.
        await record(etag);
      }
    } catch (error) {
      if (!signal.aborted && !PlanMissingError.is(error)) await releaseQuietly(blob, leaseId, signal);
      throw error;
    }
    this.durations.set(leaseId, seconds);
    return { resource, partition, holderId, token: leaseId, fencingToken: fence + 1 };
  }

  /** Leases the grace blob for the grace period, unless a grace period is already running. */
  private async startGrace(resource: string, graceMs: number, signal: AbortSignal): Promise<void> {
    const blob = this.blob(resource, "grace");
    const ms = Math.ceil(graceMs);
    try {
      // Overwriting (not ifNoneMatch) refreshes Last-Modified, which times a grace longer than 60 s.
      await this.withContainer(signal, () => blob.upload("", 0, { metadata: { gracems: String(ms) }, abortSignal: signal }));
    } catch (error) {
      // 412 LeaseIdMissing: the grace blob is leased, so a grace period is running already.
      if (hasStatus(error, 412)) return;
      throw error;
    }
    const seconds = Math.min(MAX_LEASE_S, Math.max(MIN_LEASE_S, Math.ceil(ms / 1000)));
    try {
      await blob.getBlobLeaseClient(randomUUID()).acquireLease(seconds, { abortSignal: signal });
    } catch (error) {
      if (!hasStatus(error, 409)) throw error;
    }
  }

  /** Lists every blob of `resource` with lease state and metadata (one request per 5000 blobs). */
  private async list(resource: string, signal: AbortSignal): Promise<Snapshot> {
    const base = this.base(resource);
    const snapshot: Snapshot = { serverNow: undefined, plan: undefined, grace: undefined, partitions: new Map() };
    try {
      const pages = this.container
        .listBlobsFlat({ prefix: base, includeMetadata: true, abortSignal: signal })
        .byPage({ maxPageSize: PAGE_SIZE });
      for await (const page of pages) {
        snapshot.serverNow ??= page.date?.getTime();
        for (const item of page.segment.blobItems) {
          const name = item.name.slice(base.length);
          if (name === "plan") snapshot.plan = item;
          else if (name === "grace") snapshot.grace = item;
          else if (/^p\/(0|[1-9]\d{0,8})$/.test(name)) snapshot.partitions.set(Number(name.slice(2)), item);
        }
      }
    } catch (error) {
      if (!(hasStatus(error, 404) && errorCode(error) === "ContainerNotFound")) throw error;
    }
    return snapshot;
  }

  /** The plan's partition count, from the plan blob's metadata (or, if that is missing, its content). */
  private async partitionCount(resource: string, plan: BlobItem, signal: AbortSignal): Promise<number> {
    const fromMetadata = plan.metadata?.partitions;
    if (fromMetadata !== undefined && /^\d+$/.test(fromMetadata)) return Number(fromMetadata);
    const stored = await this.downloadPlan(resource, signal);
    return (stored === null ? null : parsePlan(stored))?.partitions ?? 0;
  }

  /** The stored plan's text, or null when the plan blob (or the container) does not exist. */
  private async downloadPlan(resource: string, signal: AbortSignal): Promise<string | null> {
    try {
      const response = await this.blob(resource, "plan").download(0, undefined, { abortSignal: signal });
      const body = response.readableStreamBody;
      if (!body) return "";
      const chunks: Buffer[] = [];
      for await (const chunk of body) chunks.push(typeof chunk === "string" ? Buffer.from(chunk) : (chunk as Buffer));
      return Buffer.concat(chunks).toString("utf8");
    } catch (error) {
      if (hasStatus(error, 404)) return null;
      throw error;
    }
  }

  /** Runs `write`; if the container does not exist (first use, or a server that lost its state), creates it and runs `write` again. */
  private async withContainer<T>(signal: AbortSignal, write: () => Promise<T>): Promise<T> {
    try {
      return await write();
    } catch (error) {
      if (!(hasStatus(error, 404) && errorCode(error) === "ContainerNotFound")) throw error;
      await this.container.createIfNotExists({ abortSignal: signal });
      return write();
    }
  }

  private base(resource: string): string {
    return `${this.prefix}${resource}/`;
  }

  private blob(resource: string, name: "plan" | "grace"): BlockBlobClient {
    return this.container.getBlockBlobClient(`${this.base(resource)}${name}`);
  }

  private partitionBlob(resource: string, partition: number): BlockBlobClient {
    return this.container.getBlockBlobClient(`${this.base(resource)}p/${partition}`);
  }

  private call<T>(operation: Operation, opts: CallOptions, work: (signal: AbortSignal) => Promise<T>): Promise<T> {
    return withDeadline(`${this.name} backend ${operation}`, opts, async (signal) => {
      try {
        return await work(signal);
      } catch (error) {
        if (signal.aborted) throw signal.reason;
        if (PartitionedRateLimiterError.isError(error)) throw error;
        throw new BackendError(this.name, operation, error);
      }
    });
  }
}

function verifyPlan(resource: string, stored: string, wanted: string): void {
  const parsed = parsePlan(stored);
  if (!parsed || canonicalPlan(parsed) !== wanted) throw new PlanMismatchError(resource, stored, wanted);
}

/** Whether the listing shows a grace period running. */
function graceActive(snapshot: Snapshot): boolean {
  const grace = snapshot.grace;
  if (!grace) return false;
  if (isLeased(grace)) return true;
  const ms = Number(grace.metadata?.gracems);
  if (!(ms > MAX_LEASE_S * 1000)) return false;
  // Both times are the server's, truncated to whole seconds: add 1 s so the grace never ends early.
  if (snapshot.serverNow === undefined) return true;
  return snapshot.serverNow < grace.properties.lastModified.getTime() + 1000 + ms;
}

function isLeased(item: BlobItem): boolean {
  // "breaking" still excludes others until the break period ends.
  return item.properties.leaseState === "leased" || item.properties.leaseState === "breaking";
}

function fenceOf(item: BlobItem | undefined): number {
  const value = item?.metadata?.fence;
  return value !== undefined && /^\d+$/.test(value) ? Number(value) : 0;
}

async function releaseQuietly(blob: BlockBlobClient, leaseId: string, signal: AbortSignal): Promise<void> {
  try {
    await blob.getBlobLeaseClient(leaseId).releaseLease({ abortSignal: signal });
  } catch {
    // The lease then expires by itself; nothing else is at stake.
  }
}

function hasStatus(error: unknown, ...statuses: number[]): boolean {
  const status = typeof error === "object" && error !== null ? (error as { statusCode?: unknown }).statusCode : undefined;
  return typeof status === "number" && statuses.includes(status);
}

function errorCode(error: unknown): string | undefined {
  const code = typeof error === "object" && error !== null ? (error as { code?: unknown }).code : undefined;
  return typeof code === "string" ? code : undefined;
}
