import * as grpc from "@grpc/grpc-js";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import ts from "typescript";
import { limiterInterceptor } from "../../src/grpc/client-interceptor.js";
import { PushbackSchedule } from "../../src/grpc/pushback-schedule.js";
import { RETRY_PUSHBACK_TRAILER, retryPushbackMs } from "../../src/grpc/retry-pushback.js";
import { loadSheddingInterceptor } from "../../src/grpc/server-interceptor.js";
import { MemoryLeaseBackend } from "../../src/lease-backends/memory.js";
import { PartitionedRateLimiter } from "../../src/limiter/partitioned-rate-limiter.js";
import { VirtualClock } from "../../src/testing/virtual-clock.js";

describe("PushbackSchedule", () => {
  test("a burst of shed calls is told to come back one cost apart at the held pace, after the backlog", () => {
    // 10 units per 1000 ms held: one unit every 100 ms; 3 units queued and a 250 ms pause ahead.
    const schedule = new PushbackSchedule(1000, 60_000);
    const backlog = { cost: 1, queuedUnits: 3, capacity: 10, pausedForMs: 250 };
    const at0 = [0, 1, 2, 3].map(() => schedule.next(backlog, 1000));
    expect(at0).toEqual([650, 750, 850, 950]);
    // Later: the backlog from now (550 ms) is further out than the promises (until 1950): it counts.
    expect(schedule.next(backlog, 1500)).toEqual(650);
    // Costs weigh in: 2.5 units take 250 ms of the pace.
    expect(schedule.next({ ...backlog, cost: 2.5 }, 1500)).toEqual(900);
  });

  test("once the promises have passed, the schedule starts again from the backlog", () => {
    const schedule = new PushbackSchedule(1000, 60_000);
    expect(schedule.next({ cost: 5, queuedUnits: 0, capacity: 50, pausedForMs: 0 }, 0)).toBe(100);
    expect(schedule.next({ cost: 5, queuedUnits: 0, capacity: 50, pausedForMs: 0 }, 10_000)).toBe(100);
  });

  test("bounded by maxMs, at least 1 ms, and one interval while nothing is held", () => {
    const schedule = new PushbackSchedule(1000, 2000);
    expect(schedule.next({ cost: 1, queuedUnits: 1000, capacity: 10, pausedForMs: 0 }, 0)).toBe(2000);
    expect(schedule.next({ cost: 1, queuedUnits: 0, capacity: 10, pausedForMs: 0 }, 0)).toBe(2000);
    expect(new PushbackSchedule(1000, 2000).next({ cost: 0.0001, queuedUnits: 0, capacity: 1e6, pausedForMs: 0 }, 0)).toBe(1);
    expect(new PushbackSchedule(1000, 2000).next({ cost: 1, queuedUnits: 0, capacity: 0, pausedForMs: 0 }, 0)).toBe(1000);
    expect(new PushbackSchedule(5000, 2000).next({ cost: 1, queuedUnits: 0, capacity: 0, pausedForMs: 0 }, 0)).toBe(2000);
  });
});

test("retryPushbackMs reads grpc-retry-pushback-ms as gRFC A6 defines it", () => {
  const trailer = (value?: string) => {
    const m = new grpc.Metadata();
    if (value !== undefined) m.set(RETRY_PUSHBACK_TRAILER, value);
    return m;
  };
  expect(RETRY_PUSHBACK_TRAILER).toBe("grpc-retry-pushback-ms");
  expect(retryPushbackMs(trailer("1500"))).toBe(1500);
  expect(retryPushbackMs(trailer("0"))).toBe(0);
  expect(retryPushbackMs(trailer(" 20 "))).toBe(20);
  for (const bad of ["-1", "1.5", "abc", "", "1e3"]) expect([bad, retryPushbackMs(trailer(bad))]).toEqual([bad, null]);
  expect(retryPushbackMs(trailer())).toBeNull();
  expect(retryPushbackMs(undefined)).toBeNull();
});

test("the interceptors reject bad options, naming the option and what is allowed", () => {
  const clock = new VirtualClock(0);
  const limiter = new PartitionedRateLimiter({ resource: "grpc-bad", limit: 10, intervalMs: 1000, partitions: 1, backend: new MemoryLeaseBackend({ clock }), clock, leaseTtlMs: 3000 });
  expect(() => limiterInterceptor({ grpc: {} as never, limiter })).toThrow(/limiterInterceptor\(options\.grpc\).*@grpc\/grpc-js module/);
  expect(() => limiterInterceptor({ grpc, limiter: {} as never })).toThrow(/options\.limiter.*PartitionedRateLimiter/);
  expect(() => limiterInterceptor({ grpc, limiter, cost: -1 })).toThrow(/options\.cost/);
  expect(() => limiterInterceptor({ grpc, limiter, maxWaitMs: Number.NaN })).toThrow(/options\.maxWaitMs/);
  expect(() => loadSheddingInterceptor({ grpc, limiter, maxWaitMs: -5 })).toThrow(/loadSheddingInterceptor\(options\.maxWaitMs\)/);
  expect(() => loadSheddingInterceptor({ grpc, limiter } as never)).toThrow(/options\.maxWaitMs/);
  expect(() => loadSheddingInterceptor({ grpc, limiter, maxWaitMs: 100, maxPushbackMs: 0 })).toThrow(/options\.maxPushbackMs/);
  expect(() => loadSheddingInterceptor({ grpc: null as never, limiter, maxWaitMs: 100 })).toThrow(/options\.grpc/);
  expect(typeof limiterInterceptor({ grpc, limiter })).toBe("function");
  expect(typeof loadSheddingInterceptor({ grpc, limiter, maxWaitMs: 0 })).toBe("function");
  void limiter.close();
});

test("src loads no optional peer at run time: grpc-js, OpenTelemetry and prom-client are type-only imports", () => {
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (path.endsWith(".ts")) files.push(path);
    }
  };
  walk(join(__dirname, "..", "..", "src"));
  const peers = ["@grpc/grpc-js", "@opentelemetry/api", "prom-client"];
  const offenders: string[] = [];
  for (const file of files) {
    const text = readFileSync(file, "utf8");
    if (/["']@opentelemetry\/sdk-/.test(text)) offenders.push(`${file}: names the OpenTelemetry SDK`);
    // Parsed, not pattern-matched: TSDoc examples mention the modules too.
    const source = ts.createSourceFile(file, text, ts.ScriptTarget.ES2022);
    for (const statement of source.statements) {
      const runtime =
        (ts.isImportDeclaration(statement) && !statement.importClause?.isTypeOnly) ||
        (ts.isExportDeclaration(statement) && !statement.isTypeOnly);
      const from = (ts.isImportDeclaration(statement) || ts.isExportDeclaration(statement)) && statement.moduleSpecifier && ts.isStringLiteral(statement.moduleSpecifier) ? statement.moduleSpecifier.text : null;
      if (runtime && from !== null && peers.includes(from)) offenders.push(`${file}: ${from}`);
    }
    for (const peer of peers) if (text.includes(`import("${peer}")`) || text.includes(`require("${peer}")`)) offenders.push(`${file}: ${peer} (dynamic)`);
  }
  expect(offenders).toEqual([]);
  // The check would see them: the modules that use the peers do import their types.
  expect(files.filter((f) => /import type .* from "@grpc\/grpc-js"/.test(readFileSync(f, "utf8"))).length).toBeGreaterThan(2);
  expect(files.some((f) => /import type .* from "@opentelemetry\/api"/.test(readFileSync(f, "utf8")))).toBe(true);
});
