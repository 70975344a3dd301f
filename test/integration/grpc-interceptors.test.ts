import * as grpc from "@grpc/grpc-js";
import { performance } from "node:perf_hooks";
import { limiterInterceptor, type LimiterInterceptorOptions } from "../../src/grpc/client-interceptor.js";
import { RETRY_PUSHBACK_TRAILER } from "../../src/grpc/retry-pushback.js";
import { loadSheddingInterceptor, type GrpcShedInfo, type LoadSheddingInterceptorOptions } from "../../src/grpc/server-interceptor.js";
import type { PartitionedRateLimiter } from "../../src/limiter/partitioned-rate-limiter.js";
import { auditSlidingWindows } from "../support/audit.js";
import { readyMemoryLimiter } from "../support/flow-limiter.js";
import { RECORDER_SERVICE } from "../support/grpc-service.js";

// Both interceptors with real grpc-js servers and clients on loopback, limiters on a memory
// backend (real time). About 10 s.

const RecorderClient = grpc.makeGenericClientConstructor(RECORDER_SERVICE, "Recorder");
type Client = InstanceType<typeof RecorderClient>;
const bytes = (b: Buffer) => b;

/** A server of RECORDER_SERVICE; `record` answers what `answer` says (a status, or null for OK), every handler run is timed. */
interface TestServer {
  readonly address: string;
  /** performance.now() of each handler run, by method name. */
  readonly handled: { record: number[]; stream: number[] };
  answer: (call: grpc.ServerUnaryCall<Buffer, Buffer>) => Partial<grpc.StatusObject> | null;
  stop(): void;
}

async function startServer(interceptors: grpc.ServerInterceptor[] = []): Promise<TestServer> {
  const server = new grpc.Server({ interceptors });
  const s: TestServer = {
    address: "",
    handled: { record: [], stream: [] },
    answer: () => null,
    stop: () => server.forceShutdown(),
  };
  server.addService(RECORDER_SERVICE, {
    record(call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) {
      s.handled.record.push(performance.now());
      const error = s.answer(call);
      if (error) callback(error as grpc.ServerErrorResponse);
      else callback(null, Buffer.from("ok"));
    },
    stream(call: grpc.ServerWritableStream<Buffer, Buffer>) {
      s.handled.stream.push(performance.now());
      for (let i = 0; i < 3; i++) call.write(Buffer.from([i]));
      call.end();
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, p) => (error ? reject(error) : resolve(p))),
  );
  return Object.assign(s, { address: `127.0.0.1:${port}` });
}

function client(address: string, interceptor?: LimiterInterceptorOptions): Client {
  return new RecorderClient(address, grpc.credentials.createInsecure(), interceptor ? { interceptors: [limiterInterceptor(interceptor)] } : {});
}

interface Outcome {
  readonly code: number;
  readonly details: string;
  readonly pushback: string | null;
  /** performance.now() when the answer came. */
  readonly at: number;
}

/** One `record` call; `cancelAfterMs` cancels it from the client side. */
function record(c: Client, options: { deadline?: number; metadata?: grpc.Metadata; cancelAfterMs?: number } = {}): Promise<Outcome> {
  return new Promise((resolve) => {
    const call = c.makeUnaryRequest(RECORDER_SERVICE.record.path, bytes, bytes, Buffer.alloc(0), options.metadata ?? new grpc.Metadata(),
      options.deadline === undefined ? {} : { deadline: options.deadline }, (error) => {
        const pushback = error?.metadata?.get(RETRY_PUSHBACK_TRAILER)[0];
        resolve({ code: error ? (error.code ?? -1) : 0, details: error?.details ?? "", pushback: pushback === undefined ? null : String(pushback), at: performance.now() });
      });
    if (options.cancelAfterMs !== undefined) setTimeout(() => call.cancel(), options.cancelAfterMs);
  });
}

/** One `stream` call, resolving the messages received and the final status code. */
function stream(c: Client): Promise<{ messages: number; code: number }> {
  return new Promise((resolve) => {
    const call = c.makeServerStreamRequest(RECORDER_SERVICE.stream.path, bytes, bytes, Buffer.alloc(0));
    let messages = 0;
    call.on("data", () => messages++);
    call.on("error", (error: grpc.ServiceError) => resolve({ messages, code: error.code }));
    call.on("end", () => resolve({ messages, code: 0 }));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function connected(c: Client): Promise<void> {
  return new Promise((resolve, reject) => c.waitForReady(Date.now() + 10_000, (error) => (error ? reject(error) : resolve())));
}

describe("limiterInterceptor (client)", () => {
  let server: TestServer;
  let limiter: PartitionedRateLimiter;
  beforeEach(async () => {
    server = await startServer();
  });
  afterEach(async () => {
    server.stop();
    await limiter?.close();
  });

  test("each call is admitted before it is sent: arrivals stay within the quota, cost per method", async () => {
    // 20 units/s; record costs 2, stream 1. jitterMs absorbs loopback delays that differ per call
    // (client and server share this process's event loop).
    ({ limiter } = await readyMemoryLimiter({ resource: "grpc-pace", limit: 20, intervalMs: 1000, partitions: 2, jitterMs: 50 }));
    const c = client(server.address, { grpc, limiter, cost: (method) => (method.endsWith("/Record") ? 2 : 1) });
    // Connected and warmed up first: the first call on a channel takes tens of ms longer than the
    // next (connection, first stream), far more than jitterMs. Its units leave the window before the burst.
    await connected(c);
    expect((await record(c)).code).toBe(0);
    server.handled.record.length = 0;
    await sleep(1100);
    const start = performance.now();
    const answers = await Promise.all([...Array.from({ length: 20 }, () => record(c)), ...Array.from({ length: 4 }, () => stream(c))]);
    expect(answers.filter((a) => "code" in a && a.code !== 0)).toEqual([]);
    expect(answers.slice(20)).toEqual(Array.from({ length: 4 }, () => ({ messages: 3, code: 0 })));
    const s = limiter.stats();
    expect([s.admitted, s.admittedUnits]).toEqual([25, 46]);
    // 44 units at 2 per slice of (1000 + 30) / 10 ms: 22 slices, the last about 2.16 s after the first.
    expect(performance.now() - start).toBeGreaterThan(2000);
    const arrivals = [...server.handled.record.map((t) => ({ t, units: 2 })), ...server.handled.stream.map((t) => ({ t, units: 1 }))];
    const audit = auditSlidingWindows(arrivals, 20, 1000);
    expect(audit).toMatchObject({ overLimitWindows: 0, totalUnits: 44 });
    c.close();
  });

  test("the cost may come from the call's metadata; cost 0 passes without admission", async () => {
    ({ limiter } = await readyMemoryLimiter({ resource: "grpc-meta", limit: 20, intervalMs: 1000, partitions: 2 }));
    const c = client(server.address, { grpc, limiter, cost: (_method, metadata) => Number(metadata.get("x-batch")[0] ?? 0) });
    const batch = new grpc.Metadata();
    batch.set("x-batch", "1.5");
    expect((await record(c, { metadata: batch })).code).toBe(0);
    limiter.pauseFor(10_000);
    // Health-check style: no x-batch, cost 0, sent even while the limiter admits nothing.
    expect((await record(c)).code).toBe(0);
    expect([limiter.stats().admitted, limiter.stats().admittedUnits]).toEqual([1, 1.5]);
    expect(server.handled.record).toHaveLength(2);
    c.close();
  });

  test("RESOURCE_EXHAUSTED from the server is reported: with a pushback trailer the limiter pauses that long", async () => {
    ({ limiter } = await readyMemoryLimiter({ resource: "grpc-throttle", limit: 100, intervalMs: 1000, partitions: 2 }));
    const throttled: Array<number | null> = [];
    limiter.on("throttled", (e) => throttled.push(e.retryAfterMs));
    const c = client(server.address, { grpc, limiter });
    const pushbacks = ["700", undefined, "-1"];
    let n = 0;
    server.answer = () => {
      const metadata = new grpc.Metadata();
      const value = pushbacks[n++];
      if (value !== undefined) metadata.set(RETRY_PUSHBACK_TRAILER, value);
      return { code: grpc.status.RESOURCE_EXHAUSTED, details: "over quota", metadata };
    };
    const first = await record(c);
    expect([first.code, first.pushback]).toEqual([grpc.status.RESOURCE_EXHAUSTED, "700"]);
    const paused = limiter.stats().pausedForMs;
    expect(paused).toBeGreaterThan(0);
    expect(paused).toBeLessThanOrEqual(700);
    expect(throttled).toEqual([700]);
    // The next call waits out the pause before it is sent; no trailer / a negative one (gRFC A6:
    // "do not retry") still count as throttles, without a pause.
    const second = await record(c);
    expect(server.handled.record[1]! - server.handled.record[0]!).toBeGreaterThanOrEqual(paused - 5);
    expect(second.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    await record(c);
    expect(throttled).toEqual([700, null, null]);
    expect(limiter.stats().throttles).toBe(3);
    // Other failures are not throttles.
    server.answer = () => ({ code: grpc.status.UNAVAILABLE, details: "down" });
    expect((await record(c)).code).toBe(grpc.status.UNAVAILABLE);
    expect(limiter.stats().throttles).toBe(3);
    c.close();
  });

  test("a call that cannot be admitted in time is never sent: deadline, maxWaitMs, full queue, cancel, closed", async () => {
    ({ limiter } = await readyMemoryLimiter({ resource: "grpc-fail", limit: 100, intervalMs: 1000, partitions: 2, maxQueued: 2 }));
    const c = client(server.address, { grpc, limiter });
    const bounded = client(server.address, { grpc, limiter, maxWaitMs: 100 });
    limiter.pauseFor(5_000);
    const t0 = performance.now();
    const [deadline, waitBound] = await Promise.all([record(c, { deadline: Date.now() + 300 }), record(bounded)]);
    expect([deadline.code, waitBound.code]).toEqual([grpc.status.DEADLINE_EXCEEDED, grpc.status.RESOURCE_EXHAUSTED]);
    expect(waitBound.details).toMatch(/maxWaitMs 100/);
    // Each ends when its own bound runs out, not at the end of the pause.
    expect(waitBound.at - t0).toBeLessThan(300);
    expect(deadline.at - t0).toBeLessThan(600);
    // Cancelled while waiting: CANCELLED, and the waiter leaves the queue.
    const cancelled = await record(c, { cancelAfterMs: 30 });
    expect(cancelled.code).toBe(grpc.status.CANCELLED);
    // Queue full: two waiters fill maxQueued 2, the third is refused locally (not a server throttle).
    const waiting = [record(c), record(c)];
    await sleep(20);
    const full = await record(c);
    expect([full.code, full.details]).toEqual([grpc.status.RESOURCE_EXHAUSTED, expect.stringMatching(/queue is full/)]);
    const s = limiter.stats();
    expect([s.timedOut, s.rejected, s.aborted, s.throttles, s.queueLength]).toEqual([2, 1, 1, 0, 2]);
    // Closed: the queued calls end UNAVAILABLE, unsent.
    await limiter.close();
    expect((await Promise.all(waiting)).map((o) => o.code)).toEqual([grpc.status.UNAVAILABLE, grpc.status.UNAVAILABLE]);
    expect((await record(c)).code).toBe(grpc.status.UNAVAILABLE);
    expect(server.handled.record).toEqual([]);
    c.close();
    bounded.close();
  });
});

describe("loadSheddingInterceptor (server)", () => {
  let limiter: PartitionedRateLimiter;
  let server: TestServer;
  afterEach(async () => {
    server?.stop();
    await limiter?.close();
  });

  async function shedding(options: Omit<LoadSheddingInterceptorOptions, "grpc" | "limiter">, limit = 10) {
    ({ limiter } = await readyMemoryLimiter({ resource: `grpc-shed-${limit}-${options.maxWaitMs}`, limit, intervalMs: 1000, partitions: 1 }));
    server = await startServer([loadSheddingInterceptor({ grpc, limiter, ...options })]);
  }

  test("a burst beyond maxWaitMs is shed with RESOURCE_EXHAUSTED and pushbacks at the held pace; handlers run within the quota", async () => {
    const shed: Array<GrpcShedInfo & { at: number }> = [];
    await shedding({ maxWaitMs: 300, onShed: (_method, info) => shed.push({ ...info, at: performance.now() }) });
    const c = client(server.address);
    const burst = await Promise.all(Array.from({ length: 30 }, () => record(c)));
    const ok = burst.filter((o) => o.code === 0);
    const refused = burst.filter((o) => o.code !== 0);
    // 10/s in slices of 1 per 100 ms: the first slice plus about 3 more within 300 ms.
    expect(ok.length).toBeGreaterThanOrEqual(2);
    expect(ok.length).toBeLessThanOrEqual(5);
    expect(refused.every((o) => o.code === grpc.status.RESOURCE_EXHAUSTED && o.pushback !== null)).toBe(true);
    expect(shed).toHaveLength(refused.length);
    expect(server.handled.record).toHaveLength(ok.length);
    // Told to come back one cost apart at the held pace (100 ms per unit), so they return spread out;
    // pushbacks are whole ms, rounded up.
    const pushbacks = shed.map((i) => i.pushbackMs);
    const due = shed.map((i) => i.at + i.pushbackMs);
    for (let i = 1; i < due.length; i++) expect(due[i]! - due[i - 1]!).toBeGreaterThan(99);
    expect(pushbacks[0]).toBeGreaterThanOrEqual(100);
    expect(refused.map((o) => Number(o.pushback))).toEqual(expect.arrayContaining(pushbacks));
    expect(shed.every((i) => i.reason === "timeout" && i.code === grpc.status.RESOURCE_EXHAUSTED && i.cost === 1 && i.capacity === 10)).toBe(true);
    expect(auditSlidingWindows(server.handled.record.map((t) => ({ t, units: 1 })), 10, 1000).overLimitWindows).toBe(0);
    c.close();
  });

  test("a client through limiterInterceptor hears the pushback: its own limiter pauses, then the call passes", async () => {
    // The server admits 1 unit per ~100 ms slice and never waits; the client would send 10 per slice.
    await shedding({ maxWaitMs: 0 });
    const { limiter: clientLimiter } = await readyMemoryLimiter({ resource: "grpc-shed-client", limit: 100, intervalMs: 1000, partitions: 2 });
    const c = client(server.address, { grpc, limiter: clientLimiter });
    expect((await record(c)).code).toBe(0);
    const refused = await record(c);
    expect(refused.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    const pushback = Number(refused.pushback);
    expect(pushback).toBeGreaterThan(0);
    expect(clientLimiter.stats().throttles).toBe(1);
    expect(clientLimiter.stats().pausedForMs).toBeGreaterThan(0);
    // The next call waits out the pushback in the client's limiter, and the server admits it.
    expect((await record(c)).code).toBe(0);
    expect(server.handled.record).toHaveLength(2);
    expect(server.handled.record[1]! - refused.at).toBeGreaterThanOrEqual(pushback - 2);
    c.close();
    await clientLimiter.close();
  });

  test("a call cancelled while it waits leaves the queue; a closed limiter answers UNAVAILABLE; cost 0 and streams", async () => {
    await shedding({ maxWaitMs: 5_000, cost: (method) => (method.endsWith("/Stream") ? 0 : 1) });
    const c = client(server.address);
    // Paused for less than maxWaitMs: calls wait (a longer pause would shed them at once).
    limiter.pauseFor(3_000);
    const cancelled = await record(c, { cancelAfterMs: 100 });
    expect(cancelled.code).toBe(grpc.status.CANCELLED);
    await sleep(50);
    expect([limiter.stats().aborted, limiter.stats().queueLength]).toEqual([1, 0]);
    // cost 0: the stream runs at once, paused limiter or not.
    expect(await stream(c)).toEqual({ messages: 3, code: 0 });
    const queued = record(c);
    await sleep(50);
    await limiter.close();
    const closed = await queued;
    expect(closed.code).toBe(grpc.status.UNAVAILABLE);
    expect(Number(closed.pushback)).toBeGreaterThan(0);
    expect(server.handled.record).toEqual([]);
    c.close();
  });
});
