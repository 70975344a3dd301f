/**
 * partitioned-rate-limiter/otel: a limiter's OpenTelemetry instruments on a Meter of
 * @opentelemetry/api (an optional peer dependency: `npm install @opentelemetry/api`), the same
 * instruments as partitioned-rate-limiter/metrics. The SDK stays the application's choice.
 */
export { registerLimiterOtelMetrics } from "../metrics/otel-metrics.js";
export type { LimiterOtelMetricsOptions } from "../metrics/otel-metrics.js";
