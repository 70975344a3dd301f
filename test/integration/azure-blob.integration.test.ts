import { randomUUID } from "node:crypto";
import { startAzurite } from "../support/servers/azurite.js";
import { describeSharedQuota } from "../support/describe-shared-quota.js";

// Blob leases on an Azurite started here. Azure leases last at least 15 s, so the takeover alone
// takes about 16 s; the whole file takes about 35 s (10 s of steady state).
describeSharedQuota({
  name: "azure-blob",
  leaseTtlMs: 15_000,
  resource: "it-azure-blob",
  timeoutMs: 100_000,
  start: async () => {
    const server = await startAzurite();
    return {
      spec: { kind: "azure-blob", connectionString: server.connectionString, container: `it-${randomUUID().slice(0, 8)}` },
      stop: () => server.stop(),
    };
  },
});
