// Type tests of the public API, written as a user's code: only the package's entries and the peer
// packages are imported. Nothing here runs. test/unit/public-types.test.ts compiles it against
// the sources; scripts/check-package.mjs compiles it against the packed tarball (skipLibCheck
// false, every peer installed). `@ts-expect-error` marks code that must not compile.
import type { ContainerClient } from "@azure/storage-blob";
import type { QueueClient } from "@azure/storage-queue";
import type * as Grpc from "@grpc/grpc-js";
import type { Meter } from "@opentelemetry/api";
import type { Channel } from "amqplib";
import type { Etcd3 } from "etcd3";
import { expectTypeOf } from "expect-type";
import type { Cluster, Redis } from "ioredis";
import type * as PromClient from "prom-client";
import {
  BackendError,
  ConfigError,
  CostExceedsLimitError,
  LimiterClosedError,
  MemoryLeaseBackend,
  PartitionedRateLimiter,
  PartitionedRateLimiterError,
  PlanMismatchError,
  PlanMissingError,
  QueueFullError,
  TimeoutError,
  VirtualClock as RootVirtualClock,
  minimumSafetyMarginMs,
  pace,
  runConsumer,
  systemClock,
  validatePlan,
  type AcquireOptions,
  type AcquiredEvent,
  type AdmittedEvent,
  type BackendCallEvent,
  type BackendErrorEvent,
  type BackendHealth,
  type BackendOperation,
  type BackendRecoveredEvent,
  type Clock,
  type GraceEvent,
  type LeaseBackend,
  type LimiterStats,
  type LostEvent,
  type PartitionedRateLimiterEvents,
  type PartitionedRateLimiterOptions,
  type Plan,
  type PlanChangedEvent,
  type QueueConsumer,
  type QueuePolicy,
  type QueueSource,
  type ReleasedEvent,
  type RenewedEvent,
  type ScheduleOptions,
  type ThrottledEvent,
} from "partitioned-rate-limiter";
import { AzureBlobLeaseBackend, type AzureBlobLeaseBackendOptions } from "partitioned-rate-limiter/azure-blob";
import { ZooKeeperLeaseBackend, type ZooKeeperLeaseBackendOptions } from "partitioned-rate-limiter/zookeeper";
import { AmqpSource } from "partitioned-rate-limiter/consumers/amqp";
import { AzureQueueSource } from "partitioned-rate-limiter/consumers/azure-queue";
import { RedisStreamSource } from "partitioned-rate-limiter/consumers/redis-streams";
import { EtcdLeaseBackend, type EtcdLeaseBackendOptions } from "partitioned-rate-limiter/etcd";
import { limiterInterceptor, loadSheddingInterceptor, type GrpcModule } from "partitioned-rate-limiter/grpc";
import { registerLimiterMetrics, type PromClientModule } from "partitioned-rate-limiter/metrics";
import { registerLimiterOtelMetrics } from "partitioned-rate-limiter/otel";
import {
  RedisLeaseBackend,
  RedlockLeaseBackend,
  type RedisLeaseBackendOptions,
  type RedlockLeaseBackendOptions,
} from "partitioned-rate-limiter/redis";
import { VirtualClock, describeLeaseBackendConformance, type ConformanceTarget, type TestApi } from "partitioned-rate-limiter/testing";

declare const limiter: PartitionedRateLimiter;
declare const backend: LeaseBackend;
declare const caught: unknown;

// Options: the required ones, their types, and no unknown names.
expectTypeOf({ resource: "orders-db", backend, limit: 500, intervalMs: 1000, partitions: 20 }).toMatchTypeOf<PartitionedRateLimiterOptions>();
expectTypeOf({ resource: "orders-db", backend, followPlan: true }).toMatchTypeOf<PartitionedRateLimiterOptions>();
expectTypeOf({ resource: "orders-db", limit: 500 }).not.toMatchTypeOf<PartitionedRateLimiterOptions>();
expectTypeOf({ backend, limit: 500 }).not.toMatchTypeOf<PartitionedRateLimiterOptions>();
expectTypeOf({ resource: "orders-db", backend, leaseTtlMs: "15s" }).not.toMatchTypeOf<PartitionedRateLimiterOptions>();
expectTypeOf<PartitionedRateLimiterOptions["queuePolicy"]>().toEqualTypeOf<QueuePolicy | undefined>();
expectTypeOf<QueuePolicy>().toEqualTypeOf<"reject" | "drop-oldest">();
expectTypeOf<PartitionedRateLimiterOptions["clock"]>().toEqualTypeOf<Clock | undefined>();
expectTypeOf<PartitionedRateLimiterOptions["signal"]>().toEqualTypeOf<AbortSignal | undefined>();
expectTypeOf<PartitionedRateLimiterOptions["pools"]>().toEqualTypeOf<Readonly<Record<string, number>> | undefined>();
expectTypeOf(PartitionedRateLimiter).constructorParameters.toEqualTypeOf<[options: PartitionedRateLimiterOptions]>();
// @ts-expect-error a misspelt option does not compile (and the constructor rejects it at run time)
void new PartitionedRateLimiter({ resource: "r", backend, limits: 10 });

// Methods and properties.
expectTypeOf(limiter.acquire).parameters.toEqualTypeOf<[cost?: number, options?: AcquireOptions]>();
expectTypeOf(limiter.acquire()).toEqualTypeOf<Promise<void>>();
expectTypeOf<AcquireOptions>().toEqualTypeOf<{ signal?: AbortSignal; timeoutMs?: number; priority?: number }>();
expectTypeOf<ScheduleOptions>().toEqualTypeOf<{ cost?: number; signal?: AbortSignal; timeoutMs?: number; priority?: number }>();
expectTypeOf(limiter.tryAcquire).toEqualTypeOf<(cost?: number) => boolean>();
expectTypeOf(limiter.schedule(() => 42)).toEqualTypeOf<Promise<number>>();
expectTypeOf(limiter.schedule(async () => "row", { cost: 5, timeoutMs: 2000 })).toEqualTypeOf<Promise<string>>();
expectTypeOf(limiter.capacity).toEqualTypeOf<number>();
expectTypeOf(limiter.limit).toEqualTypeOf<number>();
expectTypeOf(limiter.intervalMs).toEqualTypeOf<number>();
expectTypeOf(limiter.reportThrottle).toEqualTypeOf<(report?: { retryAfterMs?: number }) => void>();
expectTypeOf(limiter.pauseFor).toEqualTypeOf<(ms: number) => void>();
expectTypeOf(limiter.setRateFactor).toEqualTypeOf<(factor: number) => void>();
expectTypeOf(limiter.close()).toEqualTypeOf<Promise<void>>();

// Stats: a read-only snapshot.
expectTypeOf(limiter.stats()).toEqualTypeOf<LimiterStats>();
expectTypeOf<LimiterStats["heldPartitions"]>().toEqualTypeOf<number>();
expectTypeOf<LimiterStats["partitions"]>().toEqualTypeOf<readonly number[]>();
expectTypeOf<LimiterStats["closed"]>().toEqualTypeOf<boolean>();
expectTypeOf<LimiterStats["backend"]>().toEqualTypeOf<BackendHealth>();
expectTypeOf<BackendHealth["state"]>().toEqualTypeOf<"starting" | "ok" | "failing" | "grace" | "no-plan">();
expectTypeOf<Pick<LimiterStats, "admitted" | "admittedUnits" | "leasesLost" | "backendErrors" | "throttles">>().toEqualTypeOf<{
  readonly admitted: number;
  readonly admittedUnits: number;
  readonly leasesLost: number;
  readonly backendErrors: number;
  readonly throttles: number;
}>();
// @ts-expect-error stats are read-only
limiter.stats().admitted = 0;

// Events: each name with its payload; unknown names and wrong payloads do not compile.
expectTypeOf<keyof PartitionedRateLimiterEvents>().toEqualTypeOf<
  "acquired" | "renewed" | "released" | "lost" | "backend-error" | "backend-recovered" | "backend-call" | "throttled" | "admitted" | "grace" | "plan-changed"
>();
limiter.on("acquired", (e) => expectTypeOf(e).toEqualTypeOf<AcquiredEvent>());
limiter.on("renewed", (e) => expectTypeOf(e).toEqualTypeOf<RenewedEvent>());
limiter.on("released", (e) => expectTypeOf(e).toEqualTypeOf<ReleasedEvent>());
limiter.on("lost", (e) => expectTypeOf(e).toEqualTypeOf<LostEvent>());
limiter.on("backend-error", (e) => expectTypeOf(e).toEqualTypeOf<BackendErrorEvent>());
limiter.on("backend-recovered", (e) => expectTypeOf(e).toEqualTypeOf<BackendRecoveredEvent>());
limiter.on("backend-call", (e) => expectTypeOf(e).toEqualTypeOf<BackendCallEvent>());
limiter.on("throttled", (e) => expectTypeOf(e).toEqualTypeOf<ThrottledEvent>());
limiter.on("admitted", (e) => expectTypeOf(e).toEqualTypeOf<AdmittedEvent>());
limiter.on("grace", (e) => expectTypeOf(e).toEqualTypeOf<GraceEvent>());
limiter.on("plan-changed", (e) => expectTypeOf(e).toEqualTypeOf<PlanChangedEvent>());
expectTypeOf<AcquiredEvent>().toEqualTypeOf<{ readonly partition: number; readonly fencingToken: number | null; readonly validForMs: number }>();
expectTypeOf<LostEvent["reason"]>().toEqualTypeOf<"renew-rejected" | "expired">();
expectTypeOf<ReleasedEvent["reason"]>().toEqualTypeOf<"surplus" | "rebalance" | "plan-changed" | "close">();
expectTypeOf<BackendOperation>().toEqualTypeOf<"ensurePlan" | "readPlan" | "tryAcquire" | "heartbeat" | "release">();
expectTypeOf<AdmittedEvent>().toEqualTypeOf<{ readonly cost: number; readonly waitedMs: number }>();
const onLost = (e: LostEvent) => expectTypeOf(e.partition).toEqualTypeOf<number>();
limiter.on("lost", onLost);
limiter.off("lost", onLost);
// @ts-expect-error an unknown event name
limiter.on("acquire", () => undefined);
// @ts-expect-error a listener for another event's payload
limiter.on("lost", (e: AcquiredEvent) => e.validForMs);
// @ts-expect-error emitting a payload that is not the event's
limiter.emit("lost", { partition: 1 });

// Errors: a stable code each, and an is() guard that narrows.
if (PartitionedRateLimiterError.isError(caught)) expectTypeOf(caught.code).toEqualTypeOf<string>();
if (ConfigError.is(caught)) {
  expectTypeOf(caught).toEqualTypeOf<ConfigError>();
  expectTypeOf(caught.code).toEqualTypeOf<"ERR_CONFIG">();
  expectTypeOf<Pick<ConfigError, "option" | "value" | "allowed">>().toEqualTypeOf<{ readonly option: string; readonly value: unknown; readonly allowed: string }>();
}
if (BackendError.is(caught)) {
  expectTypeOf(caught.code).toEqualTypeOf<"ERR_BACKEND">();
  expectTypeOf(caught.backend).toEqualTypeOf<string>();
  expectTypeOf(caught.operation).toEqualTypeOf<string>();
}
if (PlanMismatchError.is(caught)) {
  expectTypeOf(caught.code).toEqualTypeOf<"ERR_PLAN_MISMATCH">();
  expectTypeOf(caught.fields).toEqualTypeOf<readonly string[]>();
}
if (PlanMissingError.is(caught)) expectTypeOf(caught.code).toEqualTypeOf<"ERR_PLAN_MISSING">();
if (CostExceedsLimitError.is(caught)) {
  expectTypeOf(caught.code).toEqualTypeOf<"ERR_COST_EXCEEDS_LIMIT">();
  expectTypeOf(caught.maxCost).toEqualTypeOf<number>();
}
if (QueueFullError.is(caught)) expectTypeOf(caught.code).toEqualTypeOf<"ERR_QUEUE_FULL">();
if (LimiterClosedError.is(caught)) expectTypeOf(caught.code).toEqualTypeOf<"ERR_LIMITER_CLOSED">();
if (TimeoutError.is(caught)) {
  expectTypeOf(caught.code).toEqualTypeOf<"ERR_TIMEOUT">();
  expectTypeOf(caught.timeoutMs).toEqualTypeOf<number>();
}
expectTypeOf<ConfigError | BackendError | PlanMismatchError | PlanMissingError>().toMatchTypeOf<PartitionedRateLimiterError>();
expectTypeOf<CostExceedsLimitError | QueueFullError | LimiterClosedError | TimeoutError>().toMatchTypeOf<PartitionedRateLimiterError>();
expectTypeOf(TimeoutError.is).toEqualTypeOf<(value: unknown) => value is TimeoutError>();

// Backends: constructors, their clients, and the contract they implement.
declare const redis: Redis;
declare const cluster: Cluster;
declare const etcd: Etcd3;
declare const container: ContainerClient;
expectTypeOf(new MemoryLeaseBackend()).toMatchTypeOf<LeaseBackend>();
expectTypeOf(MemoryLeaseBackend).toBeConstructibleWith({ clock: new VirtualClock() });
expectTypeOf<RedisLeaseBackendOptions["client"]>().toEqualTypeOf<Redis | Cluster>();
expectTypeOf(RedisLeaseBackend).toBeConstructibleWith({ client: redis });
expectTypeOf(RedisLeaseBackend).toBeConstructibleWith({ client: cluster, keyPrefix: "prl:" });
expectTypeOf<RedisLeaseBackend>().toMatchTypeOf<LeaseBackend>();
// @ts-expect-error the client is required
expectTypeOf(RedisLeaseBackend).toBeConstructibleWith({ keyPrefix: "prl:" });
expectTypeOf<RedlockLeaseBackendOptions["clients"]>().toEqualTypeOf<readonly (Redis | Cluster)[]>();
expectTypeOf(RedlockLeaseBackend).toBeConstructibleWith({ clients: [redis, redis, redis], retryCount: 2 });
expectTypeOf<RedlockLeaseBackend>().toMatchTypeOf<LeaseBackend>();
expectTypeOf<EtcdLeaseBackendOptions["client"]>().toEqualTypeOf<Etcd3>();
expectTypeOf(EtcdLeaseBackend).toBeConstructibleWith({ client: etcd });
expectTypeOf<EtcdLeaseBackend>().toMatchTypeOf<LeaseBackend>();
expectTypeOf<ZooKeeperLeaseBackendOptions["connectString"]>().toEqualTypeOf<string>();
expectTypeOf(ZooKeeperLeaseBackend).toBeConstructibleWith({ connectString: "127.0.0.1:2181", root: "/rate-limits", sessionTimeoutMs: 10_000 });
expectTypeOf<ZooKeeperLeaseBackend>().toMatchTypeOf<LeaseBackend>();
// @ts-expect-error the connect string is required
expectTypeOf(ZooKeeperLeaseBackend).toBeConstructibleWith({ root: "/rate-limits" });
expectTypeOf<AzureBlobLeaseBackendOptions["containerClient"]>().toEqualTypeOf<ContainerClient>();
expectTypeOf(AzureBlobLeaseBackend).toBeConstructibleWith({ containerClient: container, prefix: "rate-limits/" });
expectTypeOf<AzureBlobLeaseBackend>().toMatchTypeOf<LeaseBackend>();
expectTypeOf(validatePlan({ limit: 500, intervalMs: 1000, partitions: 20 })).toEqualTypeOf<Plan>();
expectTypeOf(systemClock).toEqualTypeOf<Clock>();
expectTypeOf(minimumSafetyMarginMs(validatePlan({ limit: 500, intervalMs: 1000, partitions: 20 }))).toEqualTypeOf<number>();

// Queue sources and the consumer loop.
declare const queueClient: QueueClient;
declare const channel: Channel;
expectTypeOf(new AzureQueueSource<{ id: number }>({ queueClient })).toMatchTypeOf<QueueSource<{ id: number }>>();
expectTypeOf(new RedisStreamSource<{ id: number }>({ client: redis, stream: "s", group: "g", consumer: "c" })).toMatchTypeOf<QueueSource<{ id: number }>>();
expectTypeOf(new AmqpSource<{ id: number }>({ channel, queue: "q" })).toMatchTypeOf<QueueSource<{ id: number }>>();
expectTypeOf(runConsumer({ limiter, source: new AzureQueueSource<{ id: number }>({ queueClient }), handler: async (body) => {
  expectTypeOf(body).toEqualTypeOf<{ id: number }>();
} })).toEqualTypeOf<QueueConsumer>();
expectTypeOf(pace([1, 2, 3], { limiter, cost: (n) => n })).toMatchTypeOf<AsyncIterable<number>>();

// Metrics and gRPC take the peer's module (or meter) in.
declare const meter: Meter;
expectTypeOf<typeof PromClient>().toMatchTypeOf<PromClientModule>();
expectTypeOf(registerLimiterMetrics).parameter(1).toHaveProperty("registry").toEqualTypeOf<PromClient.Registry>();
expectTypeOf(registerLimiterMetrics).returns.toEqualTypeOf<() => void>();
expectTypeOf(registerLimiterOtelMetrics(limiter, { meter })).toEqualTypeOf<() => void>();
expectTypeOf<typeof Grpc>().toMatchTypeOf<GrpcModule>();
expectTypeOf(limiterInterceptor).returns.toEqualTypeOf<Grpc.Interceptor>();
expectTypeOf(loadSheddingInterceptor).returns.toEqualTypeOf<Grpc.ServerInterceptor>();

// Testing: the virtual clock is a Clock; the conformance suite's signature and target.
expectTypeOf(new VirtualClock()).toMatchTypeOf<Clock>();
// The root's VirtualClock (deprecated, kept for code written against 0.1) is the same class.
expectTypeOf(new RootVirtualClock()).toEqualTypeOf<VirtualClock>();
expectTypeOf(RootVirtualClock).toEqualTypeOf<typeof VirtualClock>();
expectTypeOf(new VirtualClock().advance(1000)).toEqualTypeOf<Promise<void>>();
expectTypeOf(describeLeaseBackendConformance).parameters.toEqualTypeOf<
  [name: string, setup: () => Promise<ConformanceTarget>, teardown: () => Promise<void>, api?: TestApi]
>();
expectTypeOf<ConformanceTarget["backend"]>().toEqualTypeOf<LeaseBackend>();
expectTypeOf<ConformanceTarget["snapshot"]>().toEqualTypeOf<(() => Promise<() => Promise<void>>) | undefined>();
void ({ backend, newClient: async () => backend, ttlMs: 1000, wait: async () => undefined, stall: async () => async () => undefined, restoreNotApplicable: "no snapshots" } satisfies ConformanceTarget);
expectTypeOf<TestApi["beforeAll"]>().toEqualTypeOf<(fn: () => Promise<void>, timeoutMs?: number) => void>();
