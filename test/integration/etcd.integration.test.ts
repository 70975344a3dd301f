import { randomUUID } from "node:crypto";
import { startEtcd, type EtcdServer } from "../support/servers/etcd.js";
import { describeScenarioResult, runSharedQuotaScenario, type SharedQuotaScenarioResult } from "../support/shared-quota-scenario.js";

// Four worker processes share limit 200/s in 20 partitions through one etcd started here; about
// 20 s in all (10 s of steady state, a takeover of about one TTL). etcd TTLs are whole seconds.
const LEASE_TTL_MS = 2_000;
let server: EtcdServer;
let result: SharedQuotaScenarioResult;

beforeAll(async () => {
  server = await startEtcd();
  result = await runSharedQuotaScenario({
    spec: { kind: "etcd", endpoints: [server.endpoint], prefix: "it/" },
    resource: `it-etcd-${randomUUID().slice(0, 8)}`,
    leaseTtlMs: LEASE_TTL_MS,
  });
  process.stdout.write(`${describeScenarioResult("etcd", result)}\n`);
}, 90_000);

afterAll(async () => {
  await server?.stop();
});

describe("etcd: four processes sharing one quota", () => {
  test("no window of 1 s ever receives more than the limit, kill included", () => {
    expect(result.audit.overLimitWindows).toBe(0);
    expect(result.audit.worstRatio).toBeLessThanOrEqual(1);
    expect(result.requestErrors).toBe(0);
  });

  test("uses at least 90% of the quota in steady state", () => {
    expect(result.steady.utilisation).toBeGreaterThanOrEqual(0.9);
  });

  test("the survivors take a killed worker's partitions over within TTL + 1 s", () => {
    expect(result.killed.heldPartitions).toBeGreaterThan(0);
    expect(result.takeoverMs).toBeLessThanOrEqual(LEASE_TTL_MS + 1_000);
  });
});
