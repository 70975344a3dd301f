import { MemoryLeaseBackend } from "../../src/lease-backends/memory.js";
import type { PartitionedRateLimiterOptions } from "../../src/limiter/options.js";
import { PartitionedRateLimiter } from "../../src/limiter/partitioned-rate-limiter.js";
import { VirtualClock } from "../../src/testing/virtual-clock.js";
import { auditSlidingWindows, type AuditEvent, type AuditResult } from "./audit.js";
import { prng } from "./simulation.js";

// No jest imports here: benchmarks drive fleets too.

/** One member of a {@link Fleet}: when it joins (and leaves), and its own options. */
export interface FleetMember {
  readonly joinAt: number;
  readonly leaveAt?: number;
  readonly options?: Partial<PartitionedRateLimiterOptions>;
  /** Cost of each admission (default 1). */
  readonly cost?: number;
  /** Concurrent acquire loops (default 2: always a waiter queued the moment one is admitted). */
  readonly loops?: number;
}

/** What a fleet run recorded. */
export interface FleetRun {
  readonly clock: VirtualClock;
  readonly backend: MemoryLeaseBackend;
  readonly limiters: readonly (PartitionedRateLimiter | null)[];
  /** Every admission, with the member that made it. */
  readonly admissions: ReadonlyArray<AuditEvent & { member: number }>;
  /** Held partitions of every live member, sampled every 100 ms: [t, held per member]. */
  readonly held: ReadonlyArray<[number, number[]]>;
  /** Leases acquired and released, with when and by whom. */
  readonly moves: ReadonlyArray<{ t: number; member: number; kind: "acquired" | "released"; partition: number }>;
  readonly audit: AuditResult;
  /** Units admitted by each member in [from, to). */
  unitsBetween(member: number, from: number, to: number): number;
  /** The first time ≥ from when `member` held `partitions` ± `slack` (Infinity if never). */
  heldReachedAt(member: number, from: number, check: (held: number) => boolean): number;
}

/**
 * runFleet runs saturated limiters that share one quota on a MemoryLeaseBackend and a
 * VirtualClock, joining and leaving as `members` say, for `durationMs` of virtual time, and
 * records admissions, holdings and lease moves. Deterministic for a given `seed`.
 */
export async function runFleet(
  quota: Pick<PartitionedRateLimiterOptions, "limit" | "intervalMs" | "partitions"> & Partial<PartitionedRateLimiterOptions>,
  members: readonly FleetMember[],
  durationMs: number,
  seed = 1,
): Promise<FleetRun> {
  const clock = new VirtualClock(1_000);
  const backend = new MemoryLeaseBackend({ clock });
  const start = clock.now();
  const random = prng(seed);
  const limiters: (PartitionedRateLimiter | null)[] = members.map(() => null);
  const admissions: Array<AuditEvent & { member: number }> = [];
  const held: Array<[number, number[]]> = [];
  const moves: Array<{ t: number; member: number; kind: "acquired" | "released"; partition: number }> = [];
  let stopped = false;
  const loops: Promise<void>[] = [];

  members.forEach((m, i) => {
    clock.setTimeout(() => {
      const limiter = new PartitionedRateLimiter({
        resource: "fleet",
        backend,
        clock,
        holderId: `m${i}`,
        random: prng(Math.floor(random() * 2 ** 31)),
        ...quota,
        ...m.options,
      });
      limiters[i] = limiter;
      limiter.on("acquired", (e) => moves.push({ t: clock.now() - start, member: i, kind: "acquired", partition: e.partition }));
      limiter.on("released", (e) => moves.push({ t: clock.now() - start, member: i, kind: "released", partition: e.partition }));
      const cost = m.cost ?? 1;
      const loop = async () => {
        while (!stopped && limiters[i] === limiter) {
          try {
            await limiter.acquire(cost);
          } catch {
            return;
          }
          admissions.push({ t: clock.now(), units: cost, member: i });
        }
      };
      for (let l = 0; l < (m.loops ?? 2); l++) loops.push(loop());
      if (m.leaveAt !== undefined) {
        clock.setTimeout(() => {
          limiters[i] = null;
          void limiter.close();
        }, m.leaveAt - m.joinAt);
      }
    }, m.joinAt);
  });
  for (let t = 0; t <= durationMs; t += 100) {
    clock.setTimeout(() => held.push([t, limiters.map((l) => l?.stats().heldPartitions ?? 0)]), t);
  }
  await clock.advance(durationMs);
  stopped = true;
  const closing = Promise.all(limiters.map((l) => l?.close()));
  await clock.advance(10_000);
  await closing;
  await clock.advance(1_000);
  await Promise.allSettled(loops);
  return {
    clock,
    backend,
    limiters,
    admissions,
    held,
    moves,
    audit: auditSlidingWindows(admissions, quota.limit ?? 0, quota.intervalMs ?? 1000),
    unitsBetween: (member, from, to) =>
      admissions.filter((a) => a.member === member && a.t - start >= from && a.t - start < to).reduce((s, a) => s + a.units, 0),
    heldReachedAt: (member, from, check) => held.find(([t, h]) => t >= from && check(h[member] ?? 0))?.[0] ?? Infinity,
  };
}

/** Jain's fairness index of `xs`: 1 when all are equal, 1/n when one has everything. */
export function jainIndex(xs: readonly number[]): number {
  const sum = xs.reduce((a, b) => a + b, 0);
  const squares = xs.reduce((a, b) => a + b * b, 0);
  return squares === 0 ? 1 : (sum * sum) / (xs.length * squares);
}
