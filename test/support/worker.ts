/**
 * A worker process of the multi-process harness (started by `startWorkers` in workers.ts as
 * `node --import tsx test/support/worker.ts`). It builds the backend of its config, reports
 * "ready", and on "start" creates a PartitionedRateLimiter and runs saturating demand: N loops of
 * `await limiter.acquire(cost)` then one request to the target over a keep-alive agent — or, for a
 * `grpc://` target (startGrpcRecorder), N loops of one gRPC call admitted by the limiter's client
 * interceptor (see grpc-sender.ts), the status RESOURCE_EXHAUSTED counted as throttled. It reports
 * stats over IPC every `statsEveryMs`; on "stop" it closes the limiter (releasing its leases),
 * quits its clients, sends its final stats and exits. It exits too when the parent goes away.
 */
import { Agent, request } from "node:http";
import { performance } from "node:perf_hooks";
import { PartitionedRateLimiter } from "../../src/limiter/partitioned-rate-limiter.js";
import { createBackend, type BuiltBackend } from "./backend-spec.js";
import type { GrpcSender } from "./grpc-sender.js";
import { COST_HEADER, PLAN_LIMIT_HEADER, SENT_AT_HEADER, WORKER_HEADER } from "./recorder.js";
import { WORKER_CONFIG_ENV, type ParentMessage, type WorkerConfig, type WorkerMessage, type WorkerStats } from "./worker-protocol.js";

/** Backend errors forwarded to the parent as log lines, at most: enough to diagnose, not a flood. */
const MAX_LOGGED_ERRORS = 5;

const config = JSON.parse(process.env[WORKER_CONFIG_ENV] ?? "null") as WorkerConfig | null;
if (!config || !process.send) {
  process.stderr.write(`worker.ts must be started by startWorkers() with an IPC channel and ${WORKER_CONFIG_ENV}\n`);
  process.exit(2);
}

const send = (message: WorkerMessage): void => {
  if (process.connected) process.send!(message);
};

let built: BuiltBackend | null = null;
let limiter: PartitionedRateLimiter | null = null;
let stopping = false;
const stopLoops = new AbortController();
const counters = { requests: 0, throttled: 0, requestErrors: 0, backendCalls: 0 };
let loggedErrors = 0;
let statsTimer: NodeJS.Timeout | undefined;
let loops: Promise<void>[] = [];

const agent = new Agent({ keepAlive: true, maxSockets: config.concurrency });
const target = new URL(config.targetUrl);
// Loaded (before "ready") only for a gRPC target, so HTTP workers never load grpc-js.
let grpcModule: typeof import("./grpc-sender.js") | null = null;
let grpcSender: GrpcSender | null = null;

function snapshot(): WorkerStats | null {
  return limiter ? { limiter: limiter.stats(), ...counters } : null;
}

function sendRequest(cost: number, planLimit: number): Promise<void> {
  return new Promise((resolve) => {
    const req = request(
      {
        host: target.hostname,
        port: target.port,
        path: target.pathname,
        method: "GET",
        agent,
        headers: {
          [WORKER_HEADER]: config!.id,
          [COST_HEADER]: String(cost),
          [SENT_AT_HEADER]: String(performance.timeOrigin + performance.now()),
          [PLAN_LIMIT_HEADER]: String(planLimit),
        },
      },
      (res) => {
        counters.requests++;
        if (res.statusCode === 429) counters.throttled++;
        res.resume();
        res.once("end", resolve);
        res.once("error", resolve);
      },
    );
    req.once("error", () => {
      counters.requestErrors++;
      resolve();
    });
    req.end();
  });
}

async function demandLoop(lim: PartitionedRateLimiter, offset: number): Promise<void> {
  const costs = config!.costs;
  let planLimit = lim.limit;
  for (let i = offset; !stopping; i++) {
    const cost = costs[i % costs.length]!;
    if (grpcSender) {
      await grpcCall(grpcSender, cost);
      continue;
    }
    try {
      await lim.acquire(cost, { signal: stopLoops.signal });
      planLimit = lim.limit;
    } catch (error) {
      if (stopping) return;
      send({ type: "log", message: `acquire failed: ${String(error)}` });
      // A closed or failed limiter will not recover; pause instead of spinning.
      await new Promise((resolve) => setTimeout(resolve, 100));
      continue;
    }
    await sendRequest(cost, planLimit);
  }
}

/** One call through the interceptor, which waits for admission itself. */
async function grpcCall(sender: GrpcSender, cost: number): Promise<void> {
  const code = await sender.call(cost);
  // A closing limiter fails its waiting calls (UNAVAILABLE): not an error of the run.
  if (stopping) return;
  counters.requests++;
  if (code === 8 /* RESOURCE_EXHAUSTED */) counters.throttled++;
  else if (code !== 0) {
    counters.requestErrors++;
    if (loggedErrors++ < MAX_LOGGED_ERRORS) send({ type: "log", message: `gRPC call ended with status ${code}` });
    // A closed or failed limiter will not recover; pause instead of spinning.
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

let reportPending = false;
function reportSoon(): void {
  if (reportPending) return;
  reportPending = true;
  setImmediate(() => {
    reportPending = false;
    const stats = snapshot();
    if (stats && !stopping) send({ type: "stats", stats });
  });
}

function start(): void {
  if (limiter || stopping || !built) return;
  const lim = new PartitionedRateLimiter({
    holderId: `${config!.id}-${process.pid}`,
    ...config!.limiter,
    backend: built.backend,
  });
  limiter = lim;
  if (grpcModule) grpcSender = grpcModule.createGrpcSender(config!.targetUrl, lim, config!.id);
  lim.on("backend-call", () => counters.backendCalls++);
  lim.on("backend-error", ({ operation, error }) => {
    if (loggedErrors++ < MAX_LOGGED_ERRORS) send({ type: "log", message: `backend ${operation} failed: ${String(error)}` });
  });
  // Report at once when held capacity changes, so the parent can time takeovers precisely.
  for (const event of ["acquired", "released", "lost"] as const) lim.on(event, reportSoon);
  loops = Array.from({ length: config!.concurrency }, (_, i) => demandLoop(lim, i));
  statsTimer = setInterval(() => {
    const stats = snapshot();
    if (stats) send({ type: "stats", stats });
  }, config!.statsEveryMs);
}

async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  if (statsTimer) clearInterval(statsTimer);
  stopLoops.abort(new Error("worker stopping"));
  await limiter?.close();
  await Promise.all(loops);
  const stats = snapshot();
  agent.destroy();
  grpcSender?.close();
  await built?.close();
  // Exit only once the last message is flushed to the parent.
  if (stats && process.connected) process.send!({ type: "stopped", stats } satisfies WorkerMessage, () => process.exit(0));
  else process.exit(0);
}

process.on("message", (message: ParentMessage) => {
  if (message.type === "start") start();
  else if (message.type === "stop") void stop();
});
// An orphaned worker must not keep hammering the backend.
process.on("disconnect", () => void stop());

Promise.all([createBackend(config.backend), target.protocol === "grpc:" ? import("./grpc-sender.js") : null]).then(
  ([b, grpcSenderModule]) => {
    built = b;
    grpcModule = grpcSenderModule;
    send({ type: "ready" });
  },
  (error: unknown) => {
    send({ type: "failed", message: `could not build the ${config!.backend.kind} backend: ${String(error)}` });
    process.exit(1);
  },
);
