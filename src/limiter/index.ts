export { PartitionedRateLimiter } from "./partitioned-rate-limiter.js";
export type { AcquireOptions, ScheduleOptions, LimiterStats, ThrottleReport } from "./partitioned-rate-limiter.js";
export type { PartitionedRateLimiterOptions, QueuePolicy } from "./options.js";
export type { BackendHealth } from "./lease-manager.js";
export type * from "./events.js";
export { fairShares, SHARED } from "./fair-share.js";
export type { FairShare, ShareInput } from "./fair-share.js";
