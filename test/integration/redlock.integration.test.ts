import { randomUUID } from "node:crypto";
import { startRedisTrio, type RedisServer } from "../support/servers/redis.js";
import { describeScenarioResult, runSharedQuotaScenario, type SharedQuotaScenarioResult } from "../support/shared-quota-scenario.js";

// Four worker processes share limit 200/s in 20 partitions through Redlock over three
// redis-servers started here; about 20 s in all (10 s of steady state, a takeover of about one TTL).
const LEASE_TTL_MS = 2_000;
let servers: RedisServer[] = [];
let result: SharedQuotaScenarioResult;

beforeAll(async () => {
  servers = await startRedisTrio();
  result = await runSharedQuotaScenario({
    spec: { kind: "redlock", urls: servers.map((s) => s.url), keyPrefix: "it:" },
    resource: `it-redlock-${randomUUID().slice(0, 8)}`,
    leaseTtlMs: LEASE_TTL_MS,
  });
  process.stdout.write(`${describeScenarioResult("redlock", result)}\n`);
}, 90_000);

afterAll(async () => {
  await Promise.all(servers.map((s) => s.stop()));
});

describe("redlock: four processes sharing one quota", () => {
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
