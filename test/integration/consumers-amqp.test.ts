import type { ChannelModel, ConfirmChannel } from "amqplib";
import { AmqpSource } from "../../src/flow/consumers/amqp-source.js";
import { runConsumer } from "../../src/flow/consumers/run-consumer.js";
import { SourceFailedError } from "../../src/errors/source-failed-error.js";
import { amqpHarness, range, shortId, sleep, waitUntil, type TestQueue } from "../support/consumer-harness.js";
import { readyMemoryLimiter } from "../support/flow-limiter.js";
import { connectRabbit } from "../support/servers/rabbitmq.js";
import type { TestBody } from "./fixtures/consumer-sources.js";

// Issue #18, reproduction 7, on the machine's RabbitMQ: a changing window adjusts one long-lived
// subscription's channel-level prefetch instead of stacking a new per-consumer prefetch on every
// re-subscription, and a channel the broker closes is handled: the consumer stops and says why.

const harness = amqpHarness();
let queue: TestQueue;
let connection: ChannelModel;
let channel: ConfirmChannel;
let consumeCalls: number;

beforeAll(async () => {
  await harness.start();
}, 60_000);

afterAll(async () => {
  await harness.stop();
});

beforeEach(async () => {
  queue = await harness.newQueue();
  connection = await connectRabbit();
  channel = await connection.createConfirmChannel();
  consumeCalls = 0;
  const consume = channel.consume.bind(channel);
  channel.consume = (...args: Parameters<ConfirmChannel["consume"]>) => {
    consumeCalls++;
    return consume(...args);
  };
});

afterEach(async () => {
  await connection.close().catch(() => undefined);
  await queue.drop();
});

test("7a. windows 5, 10, 20, 7, 14, 28 leave at most the largest window unacked, on one subscription", async () => {
  const total = 200;
  await queue.send(range(total));
  const spec = queue.spec("x");
  if (spec.kind !== "amqp") throw new Error("amqp spec expected");
  const source = new AmqpSource<TestBody>({ channel, queue: spec.queue, maxWaitMs: 200 });
  const unacked: number[] = [];
  let handedOut = 0;
  for (const window of [5, 10, 20, 7, 14, 28]) {
    // The consumer takes what the window allows and holds it, waiting for admission.
    handedOut += (await source.receive(window, { window, held: 0 })).length;
    await sleep(300);
    unacked.push(total - (await queue.remaining()));
  }
  console.log(`amqp #7 unacked after windows 5, 10, 20, 7, 14, 28: ${JSON.stringify(unacked)} (handed out ${handedOut}); consume calls ${consumeCalls}`);
  await source.close();
  expect(unacked).toEqual([5, 10, 20, 20, 20, 28]);
  expect(consumeCalls).toBe(1);
});

test("7b. a channel the broker closes (the queue was deleted) stops the consumer with a SourceFailedError, no uncaught error", async () => {
  await queue.send(range(5));
  const spec = queue.spec("x");
  if (spec.kind !== "amqp") throw new Error("amqp spec expected");
  const { limiter } = await readyMemoryLimiter({ resource: `amqp-${shortId()}`, limit: 50, intervalMs: 1000, partitions: 5 });
  const source = new AmqpSource<TestBody>({ channel, queue: spec.queue, maxWaitMs: 200 });
  const handled: number[] = [];
  const categories: string[] = [];
  const consumer = runConsumer<TestBody>({ limiter, source, handler: (body) => void handled.push(body.n), onError: (_error, category) => categories.push(category) });
  await waitUntil("the first messages", () => handled.length === 5, 5000);
  // Deleting the queue cancels the subscription; subscribing again fails with 404, which closes the channel.
  const other = await connection.createChannel();
  await other.deleteQueue(spec.queue);
  let timer: NodeJS.Timeout | undefined;
  const stopped = await Promise.race([consumer.done, new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), 10_000)))]);
  clearTimeout(timer);
  await limiter.close();
  const error = stopped?.error;
  console.log(`amqp #7 channel closed by the broker: consumer stopped with ${JSON.stringify(stopped?.reason)}: ${String(error)}; onError categories ${JSON.stringify(categories)}`);
  expect(stopped?.reason).toBe("source-failed");
  expect(SourceFailedError.is(error)).toBe(true);
  expect(String(error)).toMatch(/NOT_FOUND/);
  expect(categories).toContain("source");
});

describe("quorum queue", () => {
  let quorum: string;
  beforeEach(async () => {
    quorum = `consumers-quorum-${shortId()}`;
    const admin = await connection.createChannel();
    await admin.assertQueue(`${quorum}.dead`, { durable: true });
    await admin.assertQueue(quorum, { durable: true, arguments: { "x-queue-type": "quorum", "x-dead-letter-exchange": "", "x-dead-letter-routing-key": `${quorum}.dead` } });
    for (const n of [0, 1, 2]) admin.sendToQueue(quorum, Buffer.from(JSON.stringify({ n })), { persistent: true });
    await admin.close();
  });
  afterEach(async () => {
    const cleanup = await connectRabbit();
    const admin = await cleanup.createChannel();
    await admin.deleteQueue(quorum);
    await admin.deleteQueue(`${quorum}.dead`);
    await cleanup.close();
  });

  test("7c. with fixedPrefetch: handled on one subscription, delivery counts 1, 2, 3, then dead-lettered", async () => {
    const { limiter } = await readyMemoryLimiter({ resource: `amqp-${shortId()}`, limit: 50, intervalMs: 1000, partitions: 5 });
    const source = new AmqpSource<TestBody>({ channel, queue: quorum, maxWaitMs: 200, fixedPrefetch: 10 });
    const counts: (number | null)[] = [];
    const handled = new Set<number>();
    const consumer = runConsumer<TestBody>({
      limiter, source, maxDeliveries: 3, redeliveryDelayMs: 100,
      handler: (body, message) => {
        if (body.n !== 0) return void handled.add(body.n);
        counts.push(message.deliveryCount);
        throw new Error("0 always fails");
      },
    });
    await waitUntil("message 0 to be dead-lettered", () => consumer.stats().deadLettered === 1 && handled.size === 2, 10_000);
    await consumer.stop();
    await limiter.close();
    const dead = await channel.checkQueue(`${quorum}.dead`);
    console.log(`amqp #7 quorum queue, fixedPrefetch: delivery counts ${JSON.stringify(counts)}, dead-letter queue holds ${dead.messageCount}, consume calls ${consumeCalls}`);
    expect(counts).toEqual([1, 2, 3]);
    expect(dead.messageCount).toBe(1);
    expect(consumeCalls).toBe(1);
  });

  test("7d. without fixedPrefetch RabbitMQ refuses the channel-level prefetch: the consumer stops and says so", async () => {
    const { limiter } = await readyMemoryLimiter({ resource: `amqp-${shortId()}`, limit: 50, intervalMs: 1000, partitions: 5 });
    const source = new AmqpSource<TestBody>({ channel, queue: quorum, maxWaitMs: 200 });
    const consumer = runConsumer<TestBody>({ limiter, source, handler: () => undefined });
    let timer: NodeJS.Timeout | undefined;
    const stopped = await Promise.race([consumer.done, new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), 10_000)))]);
    clearTimeout(timer);
    await limiter.close();
    console.log(`amqp #7 quorum queue, channel-level prefetch: ${stopped?.reason}: ${String(stopped?.error)}`);
    expect(stopped?.reason).toBe("source-failed");
    expect(String(stopped?.error)).toMatch(/global qos/);
  });
});
