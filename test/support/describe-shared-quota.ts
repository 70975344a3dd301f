import type { BackendSpec } from "./backend-spec.js";
import { describeScenarioResult, runSharedQuotaScenario, type SharedQuotaScenarioOptions, type SharedQuotaScenarioResult } from "./shared-quota-scenario.js";

/** What a backend's integration test provides: its server(s), started for the test. */
export interface SharedQuotaTarget {
  /** The backend's name in test titles and output. */
  name: string;
  /** The lease TTL the workers use. */
  leaseTtlMs: number;
  /** The resource name. */
  resource: string;
  /** Starts the server(s); resolves to how workers reach them and how to stop them. */
  start(): Promise<{ spec: BackendSpec; stop(): Promise<void> }>;
  /** Time for the whole scenario, in ms. */
  timeoutMs: number;
  /**
   * The longest takeover of a killed worker's partitions allowed, in ms. Default TTL + 1 s; etcd
   * deletes expired keys up to 500 ms late, so its targets allow that on top.
   */
  takeoverBoundMs?: number;
  /** Starts the service the workers call (see SharedQuotaScenarioOptions.recorder). Default: the HTTP recorder. */
  recorder?: SharedQuotaScenarioOptions["recorder"];
}

/**
 * Registers the issue #4 integration scenario for one backend: four worker processes share
 * limit 200/s in 20 partitions through real servers for 10 s of steady state, then the worker
 * holding the most partitions is SIGKILLed. Every arrival is audited with zero tolerance.
 */
export function describeSharedQuota(target: SharedQuotaTarget): void {
  let stop: (() => Promise<void>) | undefined;
  let result: SharedQuotaScenarioResult;

  beforeAll(async () => {
    const started = await target.start();
    stop = started.stop;
    result = await runSharedQuotaScenario({
      spec: started.spec, resource: target.resource, leaseTtlMs: target.leaseTtlMs, ...(target.recorder ? { recorder: target.recorder } : {}),
    });
    process.stdout.write(`${describeScenarioResult(target.name, result)}\n`);
  }, target.timeoutMs);

  afterAll(async () => {
    await stop?.();
  });

  describe(`${target.name}: four processes sharing one quota`, () => {
    test("no window of 1 s ever receives more than the limit, kill included", () => {
      expect(result.audit.overLimitWindows).toBe(0);
      expect(result.audit.worstRatio).toBeLessThanOrEqual(1);
      expect(result.requestErrors).toBe(0);
      expect(result.throttled).toBe(0);
    });

    test("uses at least 90% of the quota in steady state", () => {
      expect(result.steady.utilisation).toBeGreaterThanOrEqual(0.9);
    });

    const bound = target.takeoverBoundMs ?? target.leaseTtlMs + 1_000;
    test(`the survivors take a killed worker's partitions over within ${bound} ms`, () => {
      expect(result.killed.heldPartitions).toBeGreaterThan(0);
      expect(result.takeoverMs).toBeLessThanOrEqual(bound);
    });
  });
}
