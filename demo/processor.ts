/**
 * A job processor of the demo, run as its own process by demo/run.ts: it reads its queue of
 * record batches and writes every record to the database, either through the limiter (leases on
 * the chosen backend, pool reserved for its type, acquire before writing) or the naive way (as
 * fast as it can, waiting out each 429's Retry-After and sending again). Reports progress to the
 * parent over IPC; stops when the parent says so.
 */
import { QueueServiceClient } from "@azure/storage-queue";
import { connectBackend } from "../src/cli/connect-backend.js";
import type { BackendSpec } from "../src/cli/backend-url.js";
import { AzureQueueSource } from "../src/flow/consumers/azure-queue-source.js";
import { runConsumer, type QueueConsumer } from "../src/flow/consumers/run-consumer.js";
import type { ReceivedMessage } from "../src/flow/consumers/queue-source.js";
import { PartitionedRateLimiter } from "../src/limiter/partitioned-rate-limiter.js";
import type { PlanInput } from "../src/contract/plan.js";
import { closeWriter, writeRecord, type DemoRecord } from "./writer.js";

/** What the parent passes (as JSON in argv[2]). */
export interface ProcessorConfig {
  readonly role: string;
  readonly mode: "limited" | "naive";
  readonly backend: BackendSpec;
  readonly queueConnectionString: string;
  readonly queueName: string;
  readonly dbUrl: string;
  readonly resource: string;
  readonly plan: PlanInput;
  readonly leaseTtlMs: number;
  readonly slicesPerInterval: number;
  readonly jitterMs: number;
}

/** A progress report to the parent. */
export interface ProgressMessage {
  readonly type: "progress";
  readonly role: string;
  readonly heldPartitions: number | null;
  readonly partitions: readonly number[];
  readonly capacity: number | null;
  readonly queueDepth: number | null;
  readonly messagesAcked: number;
  readonly throttled: number;
  readonly leasesLost: number;
  readonly backendErrors: number;
}

/** A queue message: one API call's worth of records. */
interface Batch {
  readonly records: DemoRecord[];
}

const config = JSON.parse(process.argv[2] ?? "{}") as ProcessorConfig;
const queueClient = QueueServiceClient.fromConnectionString(config.queueConnectionString, {
  retryOptions: { maxTries: 3, tryTimeoutInMs: 10_000 },
}).getQueueClient(config.queueName);
let throttled = 0;
let acked = 0;
let queueDepth: number | null = null;
let stopRequested = false;

const send = (message: unknown): void => {
  if (process.connected) process.send?.(message);
};

async function limited(): Promise<() => Promise<void>> {
  const connected = await connectBackend(config.backend);
  const limiter = new PartitionedRateLimiter({
    resource: config.resource,
    ...config.plan,
    backend: connected.backend,
    pool: config.role,
    leaseTtlMs: config.leaseTtlMs,
    slicesPerInterval: config.slicesPerInterval,
    jitterMs: config.jitterMs,
    holderId: `processor-${config.role}-${process.pid}`,
  });
  limiter.on("backend-error", ({ operation, error }) => send({ type: "log", role: config.role, text: `backend ${operation} failed: ${(error as Error).message}` }));
  const source = new AzureQueueSource<Batch>({ queueClient, visibilityTimeoutMs: 60_000 });
  const consumer: QueueConsumer = runConsumer<Batch>({
    limiter,
    source,
    cost: (m: ReceivedMessage<Batch>) => m.body.records.length,
    concurrency: 64,
    closeLimiter: true,
    handler: async (batch) => {
      // Admitted as one cost: every record of the batch may be written now.
      const results = await Promise.all(batch.records.map((r) => writeRecord(config.dbUrl, r, config.role)));
      const rejected = results.filter((r) => r.status === 429);
      if (rejected.length > 0) {
        throttled += rejected.length;
        limiter.reportThrottle({ retryAfterMs: rejected[0]!.retryAfterMs ?? 1000 });
        throw new Error(`${rejected.length} writes throttled`);
      }
      const failed = results.find((r) => r.status !== 201);
      if (failed) throw new Error(`write failed with HTTP ${failed.status}`);
      acked++;
    },
    onError: (error, operation) => {
      if (operation !== "handler") send({ type: "log", role: config.role, text: `${operation} failed: ${(error as Error).message}` });
    },
  });
  const timer = setInterval(() => {
    const s = limiter.stats();
    send({
      type: "progress", role: config.role, heldPartitions: s.heldPartitions, partitions: s.partitions, capacity: s.capacity,
      queueDepth, messagesAcked: acked, throttled, leasesLost: s.leasesLost, backendErrors: s.backendErrors,
    } satisfies ProgressMessage);
  }, 250);
  return async () => {
    clearInterval(timer);
    await consumer.stop();
    await connected.close();
  };
}

async function naive(): Promise<() => Promise<void>> {
  const source = new AzureQueueSource<Batch>({ queueClient, visibilityTimeoutMs: 60_000 });
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  const writeUntilAccepted = async (record: DemoRecord): Promise<void> => {
    for (;;) {
      const result = await writeRecord(config.dbUrl, record, config.role);
      if (result.status === 201) return;
      if (result.status !== 429) throw new Error(`write failed with HTTP ${result.status}`);
      throttled++;
      // The usual client: wait what the service asks, then send the same record again.
      await sleep(result.retryAfterMs ?? 1000);
    }
  };
  const loop = async (): Promise<void> => {
    while (!stopRequested) {
      const messages = await source.receive(32, { window: 32 });
      if (messages.length === 0) {
        await sleep(100);
        continue;
      }
      await Promise.all(
        messages.map(async (m) => {
          await Promise.all(m.body.records.map(writeUntilAccepted));
          await source.ack(m);
          acked++;
        }),
      );
    }
  };
  // Four receivers of up to 32 batches each: "as fast as possible" within one process's sockets.
  const loops = Promise.all([loop(), loop(), loop(), loop()]);
  const timer = setInterval(() => {
    send({
      type: "progress", role: config.role, heldPartitions: null, partitions: [], capacity: null,
      queueDepth, messagesAcked: acked, throttled, leasesLost: 0, backendErrors: 0,
    } satisfies ProgressMessage);
  }, 250);
  return async () => {
    stopRequested = true;
    clearInterval(timer);
    await loops;
  };
}

async function main(): Promise<void> {
  const depthTimer = setInterval(() => {
    queueClient.getProperties().then(
      (p) => (queueDepth = p.approximateMessagesCount ?? null),
      () => undefined,
    );
  }, 1000);
  const stop = config.mode === "limited" ? await limited() : await naive();
  send({ type: "ready", role: config.role });
  await new Promise<void>((resolve) => {
    process.on("message", (m: { type?: string }) => {
      if (m?.type === "stop") resolve();
    });
    // The parent died: stop at once, the queue redelivers what was not acked.
    process.on("disconnect", () => resolve());
  });
  clearInterval(depthTimer);
  await stop();
  closeWriter();
  send({ type: "stopped", role: config.role });
  process.disconnect?.();
}

main().catch((error: unknown) => {
  send({ type: "fatal", role: config.role, text: (error as Error).stack ?? String(error) });
  process.exitCode = 1;
  setTimeout(() => process.exit(1), 100).unref();
});
