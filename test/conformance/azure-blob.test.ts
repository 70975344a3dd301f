import { randomUUID } from "node:crypto";
import { BlobServiceClient } from "@azure/storage-blob";
import { AzureBlobLeaseBackend } from "../../src/lease-backends/azure-blob.js";
import { describeLeaseBackendConformance } from "../../src/testing/conformance.js";
import { startAzurite, type AzuriteServer } from "../support/servers/azurite.js";

let server: AzuriteServer;
const container = `conformance-${randomUUID().slice(0, 8)}`;

/** A backend on its own client, created as the README tells users to: one try per request, bounded. */
function connect(): AzureBlobLeaseBackend {
  const service = BlobServiceClient.fromConnectionString(server.connectionString, {
    retryOptions: { maxTries: 1, tryTimeoutInMs: 10_000 },
  });
  return new AzureBlobLeaseBackend({ containerClient: service.getContainerClient(container), prefix: "conf/" });
}

describeLeaseBackendConformance(
  "azure-blob (Azurite)",
  async () => {
    server = await startAzurite();
    return {
      backend: connect(),
      newClient: async () => connect(),
      // Azure's shortest lease: the TTL tests wait about 16 s each in real time.
      ttlMs: 15_000,
      wait: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
      stall: async () => {
        server.pause();
        return async () => server.resume();
      },
      restoreNotApplicable:
        "Azure keeps a lease as state of the current blob: point-in-time restore fails on a range holding a leased blob, " +
        "versions and snapshots carry no lease, a customer-managed failover refuses leased blobs, and losing the container " +
        "(or Azurite's memory) loses the plan with the leases (see the AzureBlobLeaseBackend TSDoc)",
    };
  },
  async () => {
    await server?.stop();
  },
);
