/**
 * partitioned-rate-limiter/consumers/azure-queue: a `QueueSource` for `runConsumer` that reads an
 * Azure Storage queue through an injected QueueClient of @azure/storage-queue (an optional peer
 * dependency: `npm install @azure/storage-queue`).
 */
export { AzureQueueSource } from "../../flow/consumers/azure-queue-source.js";
export type { AzureQueueSourceOptions } from "../../flow/consumers/azure-queue-source.js";
