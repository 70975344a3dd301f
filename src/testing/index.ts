/**
 * partitioned-rate-limiter/testing: what it takes to test code that uses the limiter, or a lease
 * backend written for another store: a virtual clock and the backend conformance suite.
 */
export { VirtualClock } from "./virtual-clock.js";
export { describeLeaseBackendConformance } from "./conformance.js";
export type { ConformanceTarget, TestApi } from "./conformance.js";
