/**
 * partitioned-rate-limiter: many processes share one throttled quota by leasing partitions of it
 * through a pluggable backend and pacing locally.
 *
 * This entry needs no optional peer dependency, neither at run time nor for its types: the
 * limiter, the in-memory backend, the errors, the backend contract and plan helpers, and the flow
 * helpers that use only Node.js. Everything built on an optional peer has its own entry, named
 * after it: `partitioned-rate-limiter/redis`, `/etcd`, `/azure-blob`, `/consumers/redis-streams`,
 * `/consumers/amqp`, `/consumers/azure-queue`, `/metrics` (prom-client), `/otel`
 * (OpenTelemetry), `/grpc`, and `/testing` (virtual clock and backend conformance suite).
 */
export * from "./limiter/index.js";
export { MemoryLeaseBackend } from "./lease-backends/memory.js";
export type { MemoryLeaseBackendOptions, MemorySnapshot } from "./lease-backends/memory.js";
export * from "./contract/index.js";
export * from "./errors/index.js";
export * from "./flow/index.js";

import { VirtualClock as TestingVirtualClock } from "./testing/virtual-clock.js";
/**
 * @deprecated Import VirtualClock from `partitioned-rate-limiter/testing`; this root export,
 * kept for code written against 0.1, goes away in the next minor version.
 */
export const VirtualClock = TestingVirtualClock;
/** @deprecated Import VirtualClock from `partitioned-rate-limiter/testing`. */
export type VirtualClock = TestingVirtualClock;
