import { randomUUID } from "node:crypto";
import { startAzurite, type AzuriteServer } from "../support/servers/azurite.js";
import { describeScenarioResult, runSharedQuotaScenario, type SharedQuotaScenarioResult } from "../support/shared-quota-scenario.js";

// Four worker processes share limit 200/s in 20 partitions through blob leases on an Azurite
// started here. Azure leases last at least 15 s, so the takeover alone takes about 16 s; the
// whole file takes about 35 s (10 s of steady state).
const LEASE_TTL_MS = 15_000;
let server: AzuriteServer;
let result: SharedQuotaScenarioResult;

beforeAll(async () => {
  server = await startAzurite();
  result = await runSharedQuotaScenario({
    spec: { kind: "azure-blob", connectionString: server.connectionString, container: `it-${randomUUID().slice(0, 8)}` },
    resource: "it-azure-blob",
    leaseTtlMs: LEASE_TTL_MS,
  });
  process.stdout.write(`${describeScenarioResult("azure-blob", result)}\n`);
}, 100_000);

afterAll(async () => {
  await server?.stop();
});

describe("azure-blob: four processes sharing one quota", () => {
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
