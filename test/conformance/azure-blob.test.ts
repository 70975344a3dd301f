import { randomUUID } from "node:crypto";
import { BlobServiceClient } from "@azure/storage-blob";
import { AzureBlobLeaseBackend } from "../../src/lease-backends/azure-blob.js";
import { startAzurite, type AzuriteServer } from "../support/servers/azurite.js";
import { describeLeaseBackendConformance } from "./lease-backend-conformance.js";

let server: AzuriteServer;
const container = `conformance-${randomUUID().slice(0, 8)}`;

/** A backend on its own client, created as the README tells users to: one try per request, bounded. */
function connect(): AzureBlobLeaseBackend {
  const service = BlobServiceClient.fromConnectionString(server.connectionString, {
    retryOptions: { maxTries: 1, tryTimeoutInMs: 10_000 },
  });
  return new AzureBlobLeaseBackend({ containerClient: service.getContainerClient(container), prefix: "conf/" });
}

// Azure leases last 15-60 s, so the TTL tests wait about 16 s each in real time.
jest.setTimeout(60_000);

describeLeaseBackendConformance(
  "azure-blob (Azurite)",
  async () => {
    server = await startAzurite();
    return {
      backend: connect(),
      newClient: async () => connect(),
      ttlMs: 15_000,
      graceMs: 15_000,
      wait: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
      stall: async () => {
        server.pause();
        return async () => server.resume();
      },
    };
  },
  async () => {
    await server?.stop();
  },
);
