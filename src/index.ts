/**
 * partitioned-rate-limiter: many processes share one throttled quota by leasing partitions of it
 * through a pluggable backend and pacing locally.
 */
export * from "./limiter/index.js";
export * from "./lease-backends/index.js";
export * from "./errors/index.js";
export * from "./flow/index.js";
// Metrics take the prom-client module as an argument: the main entry never imports prom-client.
export * from "./metrics/index.js";
