import { randomUUID } from "node:crypto";
import { QueueServiceClient } from "@azure/storage-queue";
import type { ChannelModel, ConfirmChannel } from "amqplib";
import type { Delivery, QueueSource, ReceiveOptions } from "../../src/flow/consumers/queue-source.js";
import type { SourceSpec } from "../integration/fixtures/consumer-sources.js";
import { createRedis, type RedisClient } from "./ioredis.js";
import { startAzurite, type AzuriteServer } from "./servers/azurite.js";
import { AMQP_URL, connectRabbit } from "./servers/rabbitmq.js";
import { startRedis, type RedisServer } from "./servers/redis.js";

// No jest imports here. The three real queues the consumer tests run against: Azure Queue Storage
// on an Azurite the harness starts, a Redis stream on a redis-server it starts, and a RabbitMQ queue
// (with a dead-letter queue) on the machine's broker.

/** Options of {@link TestQueue.spec}. */
export interface SpecOptions {
  /** Azure visibility timeout / Redis claimIdleMs, in ms. Default 30,000. */
  visibilityMs?: number;
}

/** One queue (or stream) made for one test. */
export interface TestQueue {
  readonly kind: SourceSpec["kind"];
  /** A spec for a consumer named `consumer` (Redis needs a name per consumer). */
  spec(consumer: string, options?: SpecOptions): SourceSpec;
  /** Sends JSON bodies. */
  send(bodies: readonly unknown[]): Promise<void>;
  /** Sends payloads as they are (a Redis entry's `body` field). */
  sendRaw(texts: readonly string[]): Promise<void>;
  /** Messages not yet acked: Azure counts invisible ones, Redis pending + lag, RabbitMQ only ready ones. */
  remaining(): Promise<number>;
  /** Payloads dead-lettered so far (Azure `<queue>-poison`, Redis `<stream>:dead-letter`, RabbitMQ's dead-letter queue), cumulative. */
  deadLetters(): Promise<string[]>;
  drop(): Promise<void>;
}

/** One kind of queue server. */
export interface Harness {
  readonly name: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  newQueue(): Promise<TestQueue>;
}

export const shortId = (): string => randomUUID().replace(/-/g, "").slice(0, 12);

export function azureHarness(): Harness {
  let server: AzuriteServer | undefined;
  let service: QueueServiceClient;
  return {
    name: "azure-queue",
    async start() {
      server = await startAzurite();
      service = QueueServiceClient.fromConnectionString(server.connectionString, { retryOptions: { maxTries: 2, tryTimeoutInMs: 10_000 } });
    },
    async stop() {
      await server?.stop();
    },
    async newQueue() {
      const name = `consumers-${shortId()}`;
      const queue = service.getQueueClient(name);
      const poison = service.getQueueClient(`${name}-poison`);
      await queue.create();
      const connectionString = server!.connectionString;
      const dead: string[] = [];
      const sendRaw = async (texts: readonly string[]) => {
        for (let i = 0; i < texts.length; i += 25) await Promise.all(texts.slice(i, i + 25).map((t) => queue.sendMessage(t)));
      };
      return {
        kind: "azure",
        spec: (_consumer, options = {}) => ({ kind: "azure", connectionString, queue: name, visibilityTimeoutMs: options.visibilityMs ?? 30_000 }),
        send: (bodies) => sendRaw(bodies.map((b) => JSON.stringify(b))),
        sendRaw,
        remaining: async () => (await queue.getProperties()).approximateMessagesCount ?? -1,
        async deadLetters() {
          if (!(await poison.exists())) return dead.slice();
          for (;;) {
            const got = await poison.receiveMessages({ numberOfMessages: 32, visibilityTimeout: 60 });
            if (got.receivedMessageItems.length === 0) break;
            for (const item of got.receivedMessageItems) {
              dead.push(item.messageText);
              await poison.deleteMessage(item.messageId, item.popReceipt);
            }
          }
          return dead.slice();
        },
        async drop() {
          await queue.deleteIfExists();
          await poison.deleteIfExists();
        },
      };
    },
  };
}

export function redisHarness(): Harness {
  let server: RedisServer | undefined;
  let client: RedisClient;
  return {
    name: "redis-stream",
    async start() {
      server = await startRedis();
      client = createRedis(server.url, { maxRetriesPerRequest: 2 });
    },
    async stop() {
      await client?.quit();
      await server?.stop();
    },
    async newQueue() {
      const stream = `consumers:${shortId()}`;
      const group = "workers";
      const url = server!.url;
      const sendRaw = async (texts: readonly string[]) => {
        const pipeline = client.pipeline();
        for (const text of texts) pipeline.xadd(stream, "*", "body", text);
        await pipeline.exec();
      };
      return {
        kind: "redis",
        spec: (consumer, options = {}) => ({ kind: "redis", url, stream, group, consumer, claimIdleMs: options.visibilityMs ?? 30_000 }),
        send: (bodies) => sendRaw(bodies.map((b) => JSON.stringify(b))),
        sendRaw,
        async remaining() {
          // Pending (delivered, not acked) plus lag (not yet delivered to the group).
          const groups = (await client.call("XINFO", "GROUPS", stream)) as unknown[];
          const info = groups.map((g) => record(g)).find((g) => g.name === group);
          if (!info) return await client.xlen(stream);
          return Number(info.pending) + Number(info.lag ?? 0);
        },
        async deadLetters() {
          const entries = (await client.call("XRANGE", `${stream}:dead-letter`, "-", "+")) as [string, string[]][];
          return entries.map(([, fields]) => record(fields).body as string);
        },
        drop: async () => void (await client.del(stream, `${stream}:dead-letter`)),
      };
    },
  };
}

export function amqpHarness(): Harness {
  let connection: ChannelModel;
  let channel: ConfirmChannel;
  return {
    name: "amqp",
    async start() {
      connection = await connectRabbit();
      channel = await connection.createConfirmChannel();
    },
    async stop() {
      await connection?.close();
    },
    async newQueue() {
      const queue = `consumers-${shortId()}`;
      const deadQueue = `${queue}.dead`;
      // Rejected messages go through the default exchange to the dead-letter queue.
      await channel.assertQueue(deadQueue, { durable: false, autoDelete: false });
      await channel.assertQueue(queue, { durable: false, autoDelete: false, arguments: { "x-dead-letter-exchange": "", "x-dead-letter-routing-key": deadQueue } });
      const dead: string[] = [];
      const sendRaw = async (texts: readonly string[]) => {
        for (const text of texts) channel.sendToQueue(queue, Buffer.from(text));
        await channel.waitForConfirms();
      };
      return {
        kind: "amqp",
        spec: () => ({ kind: "amqp", url: AMQP_URL, queue }),
        send: (bodies) => sendRaw(bodies.map((b) => JSON.stringify(b))),
        sendRaw,
        // messageCount counts ready messages only; ask when every consumer has stopped.
        remaining: async () => (await channel.checkQueue(queue)).messageCount,
        async deadLetters() {
          for (;;) {
            const got = await channel.get(deadQueue, { noAck: true });
            if (got === false) break;
            dead.push(got.content.toString("utf8"));
          }
          return dead.slice();
        },
        async drop() {
          await channel.deleteQueue(queue);
          await channel.deleteQueue(deadQueue);
        },
      };
    },
  };
}

/** A flat [key, value, ...] array (RESP2, or RESP3 with ioredis's legacy mapping) or an object → a record. */
export function record(value: unknown): Record<string, unknown> {
  if (Array.isArray(value)) {
    const out: Record<string, unknown> = {};
    for (let i = 0; i + 1 < value.length; i += 2) out[String(value[i])] = value[i + 1];
    return out;
  }
  return typeof value === "object" && value !== null ? (value as Record<string, unknown>) : {};
}

export const range = (count: number, from = 0): { n: number }[] => Array.from({ length: count }, (_, i) => ({ n: from + i }));

/** Polls `condition` every 20 ms; rejects naming `what` after `timeoutMs`. */
export async function waitUntil(what: string, condition: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A source wrapper that counts and times every receive, for hot-loop bounds. */
export interface CountingSource<T> extends QueueSource<T> {
  /** `performance.now()` of each receive call. */
  readonly receiveTimes: number[];
  /** Calls of each settling method. */
  readonly calls: { ack: number; nack: number; deadLetter: number; renew: number };
  /** The most receive calls that started within any 1 s window. */
  maxReceivesPerSecond(): number;
}

export function countingSource<T>(inner: QueueSource<T>): CountingSource<T> {
  const receiveTimes: number[] = [];
  const calls = { ack: 0, nack: 0, deadLetter: 0, renew: 0 };
  return {
    name: inner.name,
    maxBatch: inner.maxBatch,
    visibilityMs: inner.visibilityMs,
    receiveTimes,
    calls,
    receive(max: number, options: ReceiveOptions) {
      receiveTimes.push(performance.now());
      return inner.receive(max, options);
    },
    ack(m: Delivery<T>) {
      calls.ack++;
      return inner.ack(m);
    },
    nack(m: Delivery<T>, delayMs: number) {
      calls.nack++;
      return inner.nack(m, delayMs);
    },
    deadLetter(m, reason) {
      calls.deadLetter++;
      return inner.deadLetter(m, reason);
    },
    renew(ms) {
      calls.renew++;
      return inner.renew(ms);
    },
    close: () => inner.close(),
    maxReceivesPerSecond() {
      let best = 0;
      let start = 0;
      for (let end = 0; end < receiveTimes.length; end++) {
        while (receiveTimes[end]! - receiveTimes[start]! >= 1000) start++;
        best = Math.max(best, end - start + 1);
      }
      return best;
    },
  };
}
