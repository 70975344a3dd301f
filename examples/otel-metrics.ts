import { metrics } from "@opentelemetry/api";
import { AggregationTemporality, InMemoryMetricExporter, MeterProvider, PeriodicExportingMetricReader } from "@opentelemetry/sdk-metrics";
import { MemoryLeaseBackend, PartitionedRateLimiter } from "partitioned-rate-limiter";
import { registerLimiterOtelMetrics } from "partitioned-rate-limiter/otel";

// The application's OpenTelemetry SDK sets the global MeterProvider (in production e.g. NodeSDK
// with an OTLP or Prometheus exporter; here an in-memory exporter, to print what it collects).
const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 60_000 });
metrics.setGlobalMeterProvider(new MeterProvider({ readers: [reader] }));

const limiter = new PartitionedRateLimiter({
  resource: "billing-api-otel", limit: 50, intervalMs: 1000, partitions: 5, backend: new MemoryLeaseBackend(), leaseTtlMs: 2000,
});
const dispose = registerLimiterOtelMetrics(limiter, { meter: metrics.getMeter("partitioned-rate-limiter") });

await limiter.acquire(3);
await reader.forceFlush();
const collected = exporter.getMetrics().flatMap((r) => r.scopeMetrics.flatMap((s) => s.metrics));
const units = collected.find((m) => m.descriptor.name === "partitioned_rate_limiter.admitted_units");
console.log(`partitioned_rate_limiter.admitted_units ${String(units?.dataPoints[0]?.value)}`);

dispose();
await limiter.close();
await reader.shutdown();
