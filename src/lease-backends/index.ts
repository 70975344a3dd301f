export type { LeaseBackend, Lease, CallOptions, EnsurePlanOptions, PartitionState } from "./lease-backend.js";
export { MemoryLeaseBackend } from "./memory.js";
export type { MemoryLeaseBackendOptions } from "./memory.js";
