/**
 * partitioned-rate-limiter: many processes share one throttled quota by leasing partitions of it
 * through a pluggable backend and pacing locally.
 */
export * from "./limiter/index.js";
export * from "./lease-backends/index.js";
export * from "./errors/index.js";
