/**
 * Private bookkeeping of {@link EtcdLeaseBackend}: what this process knows about each etcd lease
 * it granted for one (holder, TTL). Not exported from the package.
 */

/** One partition key granted on a holder lease, as this process last saw it. */
export interface TrackedGrant {
  /** The exact value written (token and holder); deletes compare against it. */
  readonly value: string;
  /** The TTL the grant was made for, in ms. */
  readonly ttlMs: number;
  /** Monotonic time the last successful acquire or renew of this grant was sent. */
  okSentAt: number;
  /** Renewals of this grant in flight; a grant being renewed is never swept. */
  renewing: number;
}

/** A key/value pair to delete if (and only if) the key still holds that value. */
export interface Condemned {
  readonly key: string;
  readonly value: string;
}

/**
 * HolderLease is one etcd lease shared by every partition one holder took with one TTL. Since a
 * keepalive extends every key on it, a partition the limiter stopped renewing would stay held for
 * as long as its siblings are renewed; {@link staleGrants} finds such partitions (no successful
 * renewal for a whole TTL, so the limiter's local deadline for them has passed) so the backend can
 * delete them, giving each partition the lifetime it would have with a lease of its own.
 */
export class HolderLease {
  /** Partition keys granted on this lease, by key. */
  readonly grants = new Map<string, TrackedGrant>();
  /**
   * Keys that may hold one of our values but must not be used: a grant whose reply was lost, or a
   * stale grant. Deleted (compare-value) at the next sweep; renewing one answers false at once.
   */
  readonly condemned = new Map<string, Condemned>();
  /** tryAcquire calls using this lease right now; a lease in use is never revoked. */
  inFlight = 0;
  /** Set once the lease is revoked, expired or forgotten: no call may attach keys to it any more. */
  retired = false;

  /**
   * Creates the record of etcd lease `id` (decimal int64) of `ttlSeconds`, whose grant request was
   * sent at monotonic time `grantSentAt`.
   */
  constructor(
    readonly id: string,
    readonly ttlSeconds: number,
    readonly grantSentAt: number,
  ) {}

  /** Marks `key`=`value` as a grant whose last successful acquire or renew was sent at `sentAt`. */
  track(key: string, value: string, ttlMs: number, sentAt: number): void {
    this.grants.set(key, { value, ttlMs, okSentAt: sentAt, renewing: 0 });
  }

  /** Records that `key` may hold `value` without the limiter knowing (a lost reply). */
  condemn(key: string, value: string): void {
    this.condemned.set(`${key}\n${value}`, { key, value });
  }

  /** Whether `key`=`value` is condemned (a renewal of it must fail). */
  isCondemned(key: string, value: string): boolean {
    return this.condemned.has(`${key}\n${value}`);
  }

  /**
   * Moves every grant whose last successful acquire/renew was sent more than its TTL before `now`
   * (and that is not being renewed) to {@link condemned}, and returns everything condemned.
   */
  staleGrants(now: number): Condemned[] {
    for (const [key, grant] of this.grants) {
      if (grant.renewing === 0 && grant.okSentAt + grant.ttlMs < now) {
        this.grants.delete(key);
        this.condemn(key, grant.value);
      }
    }
    return [...this.condemned.values()];
  }

  /** Forgets condemned pairs once they are known to be deleted. */
  acquit(pairs: readonly Condemned[]): void {
    for (const pair of pairs) this.condemned.delete(`${pair.key}\n${pair.value}`);
  }
}

/** What a lease token says: the etcd lease id and TTL it was granted on. */
export interface TokenParts {
  readonly leaseId: string;
  readonly ttlSeconds: number;
}

/** Makes a token for a grant on lease `leaseId`: `<leaseId>.<ttlSeconds>.<random>`. */
export function makeToken(leaseId: string, ttlSeconds: number, random: string): string {
  return `${leaseId}.${ttlSeconds}.${random}`;
}

/** Parses a token made by {@link makeToken}; null for anything else (a foreign or forged token). */
export function parseToken(token: string): TokenParts | null {
  const match = /^(\d{1,20})\.(\d{1,10})\.[A-Za-z0-9-]{1,64}$/.exec(token);
  if (!match?.[1] || !match[2]) return null;
  return { leaseId: match[1], ttlSeconds: Number(match[2]) };
}
