import { setMaxListeners } from "node:events";
import { ConfigError } from "../../errors/config-error.js";
import type { PartitionedRateLimiter } from "../../limiter/partitioned-rate-limiter.js";
import type { QueueSource, ReceivedMessage } from "./queue-source.js";

/** Options of {@link runConsumer}. Times are in milliseconds. */
export interface ConsumerOptions<T> {
  /** Admits each message before its handler runs. */
  limiter: PartitionedRateLimiter;
  /** Where messages come from. */
  source: QueueSource<T>;
  /**
   * Processes one message. Resolving acks it; throwing (or rejecting) nacks it, so the queue
   * delivers it again. It runs only after the message's cost was admitted, so each call may
   * spend that many units on the throttled service.
   */
  handler: (body: T, message: ReceivedMessage<T>) => Promise<void> | void;
  /** Most messages received and not yet settled (waiting for admission or in the handler). Default 64. */
  concurrency?: number;
  /** Units each message costs: a number or a function of the message. Default 1. */
  cost?: number | ((message: ReceivedMessage<T>) => number);
  /**
   * How far ahead of admission the consumer pulls: it holds at most the messages the held capacity
   * admits in this many ms (at least 1, at most `concurrency`). Default 1000. Keep it well below
   * the queue's redelivery delay (visibility timeout, XAUTOCLAIM idle time), or waiting messages
   * are delivered to someone else too.
   */
  pullAheadMs?: number;
  /** First wait after an empty receive; doubles up to `maxPollIntervalMs`. Default 100 and 2000. */
  pollIntervalMs?: number;
  maxPollIntervalMs?: number;
  /** Also close the limiter on stop (when the consumer owns it). Default false. */
  closeLimiter?: boolean;
  /** Stops the consumer when aborted (as {@link QueueConsumer.stop}). */
  signal?: AbortSignal;
  /** Told about receive/ack/nack failures, which the consumer survives (it retries after a poll interval). */
  onError?: (error: unknown, operation: "receive" | "ack" | "nack" | "handler") => void;
}

/** Counters of a {@link QueueConsumer}. */
export interface ConsumerStats {
  /** Messages received from the queue. */
  readonly received: number;
  /** Messages whose handler succeeded and that were acked. */
  readonly acked: number;
  /** Messages nacked: handler failures, and messages given back on stop before their admission. */
  readonly nacked: number;
  /** Handler failures. */
  readonly failed: number;
  /** Received and not yet settled. */
  readonly inFlight: number;
  /** The current pull window (messages). */
  readonly window: number;
  /** Failed receive/ack/nack calls. */
  readonly sourceErrors: number;
}

/** QueueConsumer is a running consumer from {@link runConsumer}. */
export interface QueueConsumer {
  /**
   * Stops pulling, gives back (nacks) messages still waiting for admission, waits for running
   * handlers and their acks, closes the source and, with `closeLimiter`, the limiter. Idempotent.
   */
  stop(): Promise<void>;
  /** Resolves once the consumer has stopped (by stop(), the signal, or a closed limiter). */
  readonly done: Promise<void>;
  /** A snapshot of the counters. */
  stats(): ConsumerStats;
}

/** A message and whether it was settled, so no path acks or nacks it twice. */
interface Tracked<T> {
  readonly message: ReceivedMessage<T>;
  settled: boolean;
}

/**
 * runConsumer pulls from a durable queue only what the limiter's held capacity admits, the job
 * processor of the Rate Limiting pattern: it receives at most the messages that capacity admits
 * within `pullAheadMs` (bounded prefetch), admits each one's cost with `limiter.acquire` right
 * before its handler, so requests reach the service at the pace admitted, and acks only after the
 * handler succeeds. A failing handler nacks (redelivery); a process that dies leaves its messages
 * to the queue's own redelivery. Every message is settled at most once by this consumer.
 */
export function runConsumer<T>(options: ConsumerOptions<T>): QueueConsumer {
  const { limiter, source, handler } = options;
  if (typeof handler !== "function") throw new ConfigError("handler", handler, "a function");
  const concurrency = positiveInteger("concurrency", options.concurrency, 64);
  const pullAheadMs = positiveNumber("pullAheadMs", options.pullAheadMs, 1000);
  const pollIntervalMs = positiveNumber("pollIntervalMs", options.pollIntervalMs, 100);
  const maxPollIntervalMs = positiveNumber("maxPollIntervalMs", options.maxPollIntervalMs, 2000);
  const costOf = typeof options.cost === "function" ? options.cost : () => (options.cost as number | undefined) ?? 1;
  const onError = options.onError ?? (() => undefined);

  const stopper = new AbortController();
  // Every waiting message listens on this signal; that many listeners are expected, not a leak.
  setMaxListeners(0, stopper.signal);
  const running = new Set<Promise<void>>();
  let wake: (() => void) | null = null;
  let meanCost = typeof options.cost === "number" ? options.cost : 1;
  const counts = { received: 0, acked: 0, nacked: 0, failed: 0, sourceErrors: 0 };

  const window = (): number => {
    // Messages the held capacity admits within pullAheadMs; at least one, so an idle consumer
    // still pulls a message whose wait tells the limiter there is demand.
    const units = (limiter.capacity * pullAheadMs) / limiter.intervalMs;
    return Math.max(1, Math.min(concurrency, Math.ceil(units / Math.max(meanCost, 1e-6))));
  };
  const pause = (ms: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        stopper.signal.removeEventListener("abort", done);
        wake = null;
        resolve();
      }
      wake = done;
      stopper.signal.addEventListener("abort", done, { once: true });
    });

  const settle = async (item: Tracked<T>, ok: boolean): Promise<void> => {
    if (item.settled) return;
    item.settled = true;
    try {
      if (ok) {
        await source.ack(item.message);
        counts.acked++;
      } else {
        await source.nack(item.message);
        counts.nacked++;
      }
    } catch (error) {
      // The queue redelivers an unsettled message by itself; never settle it a second time.
      counts.sourceErrors++;
      onError(error, ok ? "ack" : "nack");
    }
  };

  const handle = async (item: Tracked<T>): Promise<void> => {
    const cost = costOf(item.message);
    try {
      await limiter.acquire(cost, { signal: stopper.signal });
    } catch {
      // Stopped, or the limiter closed: the message goes back for another consumer.
      await settle(item, false);
      return;
    }
    let ok = false;
    try {
      await handler(item.message.body, item.message);
      ok = true;
    } catch (error) {
      counts.failed++;
      onError(error, "handler");
    }
    await settle(item, ok);
  };

  const loop = async (): Promise<void> => {
    let idleMs = pollIntervalMs;
    while (!stopper.signal.aborted) {
      const room = window() - running.size;
      if (room <= 0) {
        await pause(50);
        continue;
      }
      let batch: ReceivedMessage<T>[];
      try {
        batch = await source.receive(Math.min(room, source.maxBatch), { signal: stopper.signal, window: window() });
      } catch (error) {
        if (stopper.signal.aborted) break;
        counts.sourceErrors++;
        onError(error, "receive");
        await pause(idleMs);
        idleMs = Math.min(idleMs * 2, maxPollIntervalMs);
        continue;
      }
      for (const message of batch) {
        counts.received++;
        const cost = costOf(message);
        meanCost += (cost - meanCost) / Math.min(counts.received, 100);
        const task = handle({ message, settled: false }).finally(() => {
          running.delete(task);
          wake?.();
        });
        running.add(task);
      }
      if (batch.length === 0) {
        await pause(idleMs);
        idleMs = Math.min(idleMs * 2, maxPollIntervalMs);
      } else {
        idleMs = pollIntervalMs;
      }
    }
  };

  let stopping: Promise<void> | null = null;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      stopper.abort(new Error("consumer stopped"));
      await looping;
      while (running.size > 0) await Promise.allSettled([...running]);
      await source.close();
      if (options.closeLimiter) await limiter.close();
    })();
    return stopping;
  };
  const looping = loop().catch((error: unknown) => onError(error, "receive"));
  // A closed limiter can admit nothing more: stop instead of nacking forever.
  const onClosed = () => void stop();
  const closedPoll = setInterval(() => {
    if (limiter.stats().closed) onClosed();
  }, 250);
  closedPoll.unref();
  options.signal?.addEventListener("abort", onClosed, { once: true });
  if (options.signal?.aborted) onClosed();
  const done = looping.then(() => stop()).finally(() => {
    clearInterval(closedPoll);
    options.signal?.removeEventListener("abort", onClosed);
  });

  return {
    stop: () => stop().then(() => done),
    done,
    stats: () => ({ ...counts, inFlight: running.size, window: window() }),
  };
}

function positiveInteger(name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1) throw new ConfigError(name, value, "an integer >= 1");
  return value;
}

function positiveNumber(name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) throw new ConfigError(name, value, "a finite number > 0");
  return value;
}
