import { QueueServiceClient } from "@azure/storage-queue";
import { MemoryLeaseBackend, PartitionedRateLimiter, runConsumer } from "partitioned-rate-limiter";
import { AzureQueueSource } from "partitioned-rate-limiter/consumers/azure-queue";

const limiter = new PartitionedRateLimiter({
  resource: "records-db", limit: 50, intervalMs: 1000, partitions: 5, backend: new MemoryLeaseBackend(), leaseTtlMs: 2000,
});
// Azurite locally (UseDevelopmentStorage=true), or your account's connection string.
const connectionString = process.env.AZURE_STORAGE_CONNECTION_STRING ?? "UseDevelopmentStorage=true";
const queueClient = QueueServiceClient.fromConnectionString(connectionString, { retryOptions: { maxTries: 2, tryTimeoutInMs: 10_000 } })
  .getQueueClient("records-example");
await queueClient.createIfNotExists();
for (let id = 1; id <= 10; id++) await queueClient.sendMessage(JSON.stringify({ id }));

// Stands in for the write to the throttled service.
const written: number[] = [];
const writeRecord = async (msg: { id: number }) => void written.push(msg.id);

const source = new AzureQueueSource<{ id: number }>({ queueClient });   // bodies are JSON.parse'd
const consumer = runConsumer({ limiter, source, handler: (msg) => writeRecord(msg) });
while (written.length < 10) await new Promise((resolve) => setTimeout(resolve, 100));
// on shutdown:
await consumer.stop();
console.log(`wrote ${written.length} records, acked ${consumer.stats().acked}`);
await limiter.close();
