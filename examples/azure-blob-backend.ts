import { BlobServiceClient } from "@azure/storage-blob";
import { PartitionedRateLimiter } from "partitioned-rate-limiter";
import { AzureBlobLeaseBackend } from "partitioned-rate-limiter/azure-blob";

// Azurite locally (UseDevelopmentStorage=true), or your account's connection string.
const connectionString = process.env.AZURE_STORAGE_CONNECTION_STRING ?? "UseDevelopmentStorage=true";
const service = BlobServiceClient.fromConnectionString(connectionString, { retryOptions: { maxTries: 1 } });
const backend = new AzureBlobLeaseBackend({ containerClient: service.getContainerClient("rate-limits") });

const limiter = new PartitionedRateLimiter({
  resource: "ingest-storage", limit: 100, intervalMs: 1000, partitions: 4, backend,
  leaseTtlMs: 15_000,                    // whole seconds from 15000 to 60000 (an Azure limit)
});
await limiter.acquire();
console.log(`admitted; holding ${limiter.stats().heldPartitions} blob leases`);
await limiter.close();                   // the SDK client holds no connection to close
