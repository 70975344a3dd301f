export type { LeaseBackend, Lease, CallOptions, EnsurePlanOptions, PartitionState } from "./lease-backend.js";
export { MemoryLeaseBackend } from "./memory.js";
export type { MemoryLeaseBackendOptions } from "./memory.js";
export { RedisLeaseBackend } from "./redis.js";
export type { RedisLeaseBackendOptions } from "./redis.js";
export { RedlockLeaseBackend } from "./redlock.js";
export type { RedlockLeaseBackendOptions } from "./redlock.js";
export { AzureBlobLeaseBackend } from "./azure-blob.js";
export type { AzureBlobLeaseBackendOptions } from "./azure-blob.js";
