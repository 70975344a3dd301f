/**
 * partitioned-rate-limiter/azure-blob: the lease backend on Azure Blob Storage leases (Azurite
 * locally) through an injected ContainerClient of @azure/storage-blob (an optional peer
 * dependency: `npm install @azure/storage-blob`).
 */
export { AzureBlobLeaseBackend } from "../lease-backends/azure-blob.js";
export type { AzureBlobLeaseBackendOptions } from "../lease-backends/azure-blob.js";
