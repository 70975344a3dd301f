export { registerLimiterMetrics } from "./limiter-metrics.js";
export type { LimiterMetricsOptions, PromClientModule } from "./limiter-metrics.js";
