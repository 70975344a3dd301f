/**
 * How a backend for another store proves itself, written as its author would: with nothing but
 * the package's public entries (`partitioned-rate-limiter` and `partitioned-rate-limiter/testing`;
 * jest maps them to the sources, scripts/check-package.mjs compiles the same imports against the
 * packed tarball). The "store" here is the in-memory backend behind a backend class of its own,
 * so the file also shows that the root entry exports every type a LeaseBackend needs.
 */
import { readFileSync } from "node:fs";
import {
  MemoryLeaseBackend,
  type AcquireRequest,
  type AcquireResult,
  type CallOptions,
  type EnsurePlanOptions,
  type HeartbeatRequest,
  type HeartbeatResult,
  type Lease,
  type LeaseBackend,
  type LeaseTtlRule,
  type Plan,
  type ResourceState,
  type StoredPlan,
} from "partitioned-rate-limiter";
import { VirtualClock, describeLeaseBackendConformance } from "partitioned-rate-limiter/testing";

/** One client of the store; several clients of one store see the same leases. */
class StoreLeaseBackend implements LeaseBackend {
  readonly name = "third-party-store";
  readonly leaseTtlRule: LeaseTtlRule;

  constructor(private readonly store: MemoryLeaseBackend) {
    this.leaseTtlRule = { ...store.leaseTtlRule, reason: `the store's rule: ${store.leaseTtlRule.reason}` };
  }

  ensurePlan(resource: string, plan: Plan, opts: EnsurePlanOptions): Promise<StoredPlan> {
    return this.store.ensurePlan(resource, plan, opts);
  }
  readPlan(resource: string, opts: CallOptions): Promise<StoredPlan | null> {
    return this.store.readPlan(resource, opts);
  }
  replacePlan(resource: string, plan: Plan, opts: CallOptions & { expectedEpoch?: number }): Promise<StoredPlan> {
    return this.store.replacePlan(resource, plan, opts);
  }
  deletePlan(resource: string, opts: CallOptions): Promise<boolean> {
    return this.store.deletePlan(resource, opts);
  }
  tryAcquire(request: AcquireRequest, opts: CallOptions): Promise<AcquireResult> {
    return this.store.tryAcquire(request, opts);
  }
  heartbeat(request: HeartbeatRequest, opts: CallOptions): Promise<HeartbeatResult> {
    return this.store.heartbeat(request, opts);
  }
  release(lease: Lease, opts: CallOptions): Promise<void> {
    return this.store.release(lease, opts);
  }
  inspect(resource: string, opts: CallOptions): Promise<ResourceState> {
    return this.store.inspect(resource, opts);
  }
  async close(): Promise<void> {
    // The store is shared by every client; the suite's teardown closes it.
  }
}

const clock = new VirtualClock();
const store = new MemoryLeaseBackend({ clock });

describeLeaseBackendConformance(
  "a third-party backend built on the public entries only",
  async () => ({
    backend: new StoreLeaseBackend(store),
    newClient: async () => new StoreLeaseBackend(store),
    ttlMs: 1000,
    wait: (ms) => clock.advance(ms),
    stall: async () => {
      const resume = store.stall();
      return async () => resume();
    },
    snapshot: async () => {
      const saved = store.snapshot();
      return async () => store.restore(saved);
    },
  }),
  async () => {
    await store.close();
  },
);

test("this file imports nothing but the package's public entries (and node:fs to check that)", () => {
  const source = readFileSync(__filename, "utf8");
  const specifiers = [...source.matchAll(/^(?:import|export)\b[^;]*?\bfrom\s+"([^"]+)"/gms)].map((m) => m[1]);
  expect(new Set(specifiers)).toEqual(new Set(["node:fs", "partitioned-rate-limiter", "partitioned-rate-limiter/testing"]));
});
