import { randomUUID } from "node:crypto";
import { startAzurite } from "../support/servers/azurite.js";
import { describeSharedQuota } from "../support/describe-shared-quota.js";

// Blob leases on an Azurite started here. Azure leases last at least 15 s, so the takeover alone
// takes about 16 s; the whole file takes about 35 s (10 s of steady state).
describeSharedQuota({
  name: "azure-blob",
  leaseTtlMs: 15_000,
  // The dead worker's blob leases end exactly 15 s after its last renewal, but its holder record's
  // expiry is known only from whole-second Last-Modified times (up to 1 s late), and each survivor
  // then takes its part one partition per acquire of 3-5 HTTP requests to Azurite: up to 3 s on a
  // loaded 2-core machine (18.2 s and 18.4 s measured in full runs).
  takeoverBoundMs: 15_000 + 1_000 + 3_000,
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
