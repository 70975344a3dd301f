/**
 * partitioned-rate-limiter/metrics: a limiter's Prometheus metrics through prom-client (an
 * optional peer dependency: `npm install prom-client`), which the caller passes in.
 */
export { registerLimiterMetrics } from "../metrics/limiter-metrics.js";
export type { LimiterMetricsOptions, PromClientModule } from "../metrics/limiter-metrics.js";
