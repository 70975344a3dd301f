import { setMaxListeners } from "node:events";
import { ConfigError } from "../../errors/config-error.js";
import { CostExceedsLimitError } from "../../errors/cost-exceeds-limit-error.js";
import { SourceFailedError } from "../../errors/source-failed-error.js";
import { StaleMessageError } from "../../errors/stale-message-error.js";
import { systemClock, type Clock, type TimerHandle } from "../../contract/clock.js";
import type { PartitionedRateLimiter } from "../../limiter/partitioned-rate-limiter.js";
import { HandlerSlots } from "./handler-slots.js";
import { isUndecodable, type DeadLetterReason, type Delivery, type MessageInfo, type QueueSource, type ReceivedMessage } from "./queue-source.js";

/**
 * What an `onError` call is about. The source's own calls: `"receive"`, `"ack"`, `"nack"`,
 * `"dead-letter"`, `"renew"` (the consumer survives them and retries). A message's problems:
 * `"decode"` (its payload cannot be decoded), `"cost"` (its cost function threw, returned
 * something other than a finite number > 0, or a cost the limiter can never admit), `"deliveries"`
 * (it arrived delivered more than `maxDeliveries` times): each is dead-lettered without running the
 * handler. `"handler"`: the handler threw (the message is redelivered after a delay, or
 * dead-lettered on its last allowed delivery). `"stale"`: the consumer lost a message it held
 * (its visibility ran out or another consumer has it) and did not run the handler for it.
 * `"source"`: the source failed for good (`SourceFailedError`); the consumer stops.
 */
export type ConsumerErrorCategory = "receive" | "ack" | "nack" | "dead-letter" | "renew" | "decode" | "cost" | "deliveries" | "handler" | "stale" | "source";

/** What a handler gets beside the message. */
export interface HandlerContext {
  /**
   * Aborted (with a StaleMessageError) when the consumer learns that the message is no longer
   * its own, e.g. a renewal found another consumer holding it: the work may be done twice, so a
   * long handler may stop early. Not aborted by `stop()`, which lets running handlers finish.
   */
  readonly signal: AbortSignal;
}

/** Options of {@link runConsumer}. Times are in milliseconds. */
export interface ConsumerOptions<T> {
  /** Admits each message before its handler runs. */
  limiter: PartitionedRateLimiter;
  /** Where messages come from. */
  source: QueueSource<T>;
  /**
   * Processes one message. Resolving acks it; throwing (or rejecting) redelivers it after a delay,
   * or dead-letters it on its `maxDeliveries`-th delivery. It runs only after the message's cost
   * was admitted, so each call may spend that many units on the throttled service.
   */
  handler: (body: T, message: ReceivedMessage<T>, context: HandlerContext) => Promise<void> | void;
  /**
   * Most handlers running at once, 1 or more. Default 64. Throughput is at most
   * `concurrency / handler duration`: for 4 s handlers at 50 messages per second, at least 200
   * (plus the pull window) are needed.
   */
  concurrency?: number;
  /** Units each message costs: a number > 0 or a function of the message. Default 1. */
  cost?: number | ((message: ReceivedMessage<T>) => number);
  /**
   * How far ahead of admission the consumer pulls: it holds waiting for admission at most the
   * messages the limiter's effective pace (held capacity × rate factor; none while a Retry-After
   * pause lasts) admits in this many ms, at least one. Running handlers do not count. Default 1000.
   */
  pullAheadMs?: number;
  /** The most messages held waiting for admission, whatever the pace. Default 1000. */
  maxWaiting?: number;
  /**
   * Deliveries a message may have (integer >= 1, or Infinity): a handler failure on the last one
   * dead-letters it, and a message that arrives with more (its handler crashed the process) is
   * dead-lettered without running. Default 5, as Azure Functions' `maxDequeueCount`.
   */
  maxDeliveries?: number;
  /**
   * Delay before a failed message is delivered again, after its first delivery; it doubles with
   * each further delivery up to `maxRedeliveryDelayMs`, and each delay is drawn from [½, 1] of
   * that (jitter, so failures of one batch do not come back together). Defaults 1000 and 60,000.
   * Azure rounds it up to whole seconds; Redis Streams caps it at `claimIdleMs`.
   */
  redeliveryDelayMs?: number;
  maxRedeliveryDelayMs?: number;
  /** First wait after an empty or failed receive; doubles up to `maxPollIntervalMs`. Default 100 and 2000. */
  pollIntervalMs?: number;
  maxPollIntervalMs?: number;
  /** Also close the limiter on stop (when the consumer owns it). Default false. */
  closeLimiter?: boolean;
  /** Stops the consumer when aborted (as {@link QueueConsumer.stop}). */
  signal?: AbortSignal;
  /**
   * Told about every failure, with its {@link ConsumerErrorCategory} and the message when there
   * is one. The consumer survives all of them except `"source"`. Default: ignore.
   */
  onError?: (error: unknown, category: ConsumerErrorCategory, message?: MessageInfo) => void;
  /** Clock for renewals, validity and waits. Default `systemClock`. */
  clock?: Clock;
  /** Random source in [0, 1) for the redelivery jitter. Default `Math.random`. */
  random?: () => number;
}

/** Counters of a {@link QueueConsumer}. */
export interface ConsumerStats {
  /** Receive calls made. */
  readonly receives: number;
  /** Messages received from the queue. */
  readonly received: number;
  /** Messages whose handler succeeded and that were acked. */
  readonly acked: number;
  /** Messages nacked after a handler failure (redelivered after a delay). */
  readonly nacked: number;
  /** Messages given back unhandled on stop or a closed limiter. */
  readonly givenBack: number;
  /** Messages dead-lettered (undecodable, bad cost, too many deliveries, last handler failure). */
  readonly deadLettered: number;
  /** Handler failures. */
  readonly failed: number;
  /** Messages lost before their handler ran (visibility ran out, or another consumer has them). */
  readonly stale: number;
  /** Successful renewals of a message's visibility or claim. */
  readonly renewed: number;
  /** Messages waiting for a handler slot or admission. */
  readonly waiting: number;
  /** Handlers running. */
  readonly running: number;
  /** Received and not yet settled (waiting, running or settling). */
  readonly inFlight: number;
  /** The current pull window (messages that may wait for admission). */
  readonly window: number;
  /** Failed source calls (receive, ack, nack, dead-letter, renew). */
  readonly sourceErrors: number;
}

/** Why a consumer stopped, from {@link QueueConsumer.done}. */
export interface ConsumerStopped {
  /**
   * `"stop"`: stop() was called; `"signal"`: the signal aborted; `"limiter-closed"`: the limiter
   * was closed by someone else; `"source-failed"`: the source can never deliver again (`error`).
   */
  readonly reason: "stop" | "signal" | "limiter-closed" | "source-failed";
  /** The SourceFailedError for `"source-failed"`. */
  readonly error?: unknown;
}

/** QueueConsumer is a running consumer from {@link runConsumer}. */
export interface QueueConsumer {
  /**
   * Stops pulling, gives back messages still waiting for admission, waits for running handlers
   * and their settlement, closes the source and, with `closeLimiter`, the limiter. Idempotent.
   */
  stop(): Promise<ConsumerStopped>;
  /** Resolves (never rejects) once the consumer has stopped, saying why. */
  readonly done: Promise<ConsumerStopped>;
  /** A snapshot of the counters. */
  stats(): ConsumerStats;
}

/** One message this consumer holds, from receive to settlement. */
interface Held<T> {
  readonly delivery: Delivery<T>;
  phase: "waiting" | "running" | "settling";
  /** Clock time up to which the message is surely still ours. */
  validUntil: number;
  /** When the next renewal is due. */
  renewDueAt: number;
  /** A renewal in flight; settlement waits for it (Azure changes the pop receipt). */
  renewing: Promise<void> | null;
  stale: StaleMessageError | null;
  /** Aborts the wait for a slot or admission (stop, stale) and the handler's signal (stale). */
  readonly abort: AbortController;
}

/**
 * runConsumer pulls from a durable queue only what the limiter admits, the job processor of the
 * Rate Limiting pattern. It holds waiting for admission at most what the effective pace admits
 * within `pullAheadMs` (nothing while the limiter is paused), runs at most `concurrency` handlers,
 * admits each message's cost with `limiter.acquire` right before its handler (so requests reach
 * the service at the admitted pace), and acks after the handler succeeds.
 *
 * It survives production's messages: one that cannot be decoded or costed is dead-lettered and
 * reported, never blocking the rest; a failing one comes back after a growing delay and is
 * dead-lettered on its `maxDeliveries`-th delivery; messages that wait or run longer than the
 * source's visibility are renewed (about every third of it), and a message whose visibility ran
 * out or that another consumer took is never handed to the handler. Every message is settled at
 * most once by this consumer; a process that dies leaves its messages to the queue's redelivery.
 */
export function runConsumer<T>(options: ConsumerOptions<T>): QueueConsumer {
  if (typeof options !== "object" || options === null) throw new ConfigError("runConsumer(options)", options, "an options object");
  const { limiter, source, handler } = options;
  if (typeof limiter?.acquire !== "function") throw new ConfigError("limiter", limiter, "a PartitionedRateLimiter");
  if (typeof source?.receive !== "function" || typeof source.renew !== "function" || typeof source.deadLetter !== "function") {
    throw new ConfigError("source", source, "a QueueSource (receive, ack, nack, renew, deadLetter, close)");
  }
  if (typeof handler !== "function") throw new ConfigError("handler", handler, "a function");
  const concurrency = positiveInteger("concurrency", options.concurrency, 64);
  const pullAheadMs = positiveNumber("pullAheadMs", options.pullAheadMs, 1000);
  const maxWaiting = positiveInteger("maxWaiting", options.maxWaiting, 1000);
  const maxDeliveries = options.maxDeliveries === Infinity ? Infinity : positiveInteger("maxDeliveries", options.maxDeliveries, 5);
  const redeliveryDelayMs = nonNegativeNumber("redeliveryDelayMs", options.redeliveryDelayMs, 1000);
  const maxRedeliveryDelayMs = nonNegativeNumber("maxRedeliveryDelayMs", options.maxRedeliveryDelayMs, Math.max(60_000, redeliveryDelayMs));
  if (maxRedeliveryDelayMs < redeliveryDelayMs) throw new ConfigError("maxRedeliveryDelayMs", maxRedeliveryDelayMs, `a number >= redeliveryDelayMs (${redeliveryDelayMs})`);
  const pollIntervalMs = positiveNumber("pollIntervalMs", options.pollIntervalMs, 100);
  const maxPollIntervalMs = positiveNumber("maxPollIntervalMs", options.maxPollIntervalMs, 2000);
  const costOption = options.cost ?? 1;
  if (typeof costOption !== "function" && !validCost(costOption)) throw new ConfigError("cost", costOption, "a finite number > 0 or a function of the message");
  const onError = options.onError ?? (() => undefined);
  const clock = options.clock ?? systemClock;
  const random = options.random ?? Math.random;
  const visibilityMs = source.visibilityMs;
  if (visibilityMs !== null && !(visibilityMs > 0)) throw new ConfigError("source.visibilityMs", visibilityMs, "a number > 0 or null");
  // A message is counted as ours until a little before the queue could hand it to someone else:
  // the clocks of this process and the queue may differ a little, and a decision takes time.
  const marginMs = visibilityMs === null ? 0 : Math.min(2000, visibilityMs / 5);
  const renewEveryMs = visibilityMs === null ? Infinity : visibilityMs / 3;

  const stopper = new AbortController();
  // Every waiting message listens on its own signal, linked to this one: many listeners are expected.
  setMaxListeners(0, stopper.signal);
  const slots = new HandlerSlots(concurrency);
  const held = new Set<Held<T>>();
  const tasks = new Set<Promise<void>>();
  let waiting = 0;
  let running = 0;
  let meanCost = typeof costOption === "number" ? costOption : 1;
  let admittedCosts = 0;
  let stopInfo: ConsumerStopped | null = null;
  let wake: (() => void) | null = null;
  const counts = { receives: 0, received: 0, acked: 0, nacked: 0, givenBack: 0, deadLettered: 0, failed: 0, stale: 0, renewed: 0, sourceErrors: 0 };

  const report = (error: unknown, category: ConsumerErrorCategory, message?: MessageInfo): void => {
    try {
      onError(error, category, message);
    } catch {
      // A throwing onError must not take the consumer down with it.
    }
  };

  const window = (): number => {
    const s = limiter.stats();
    if (s.pausedForMs > 0) return 0;
    const units = (s.capacity * s.rateFactor * pullAheadMs) / limiter.intervalMs;
    // At least one, so a consumer holding no capacity yet still shows the limiter its demand.
    return Math.max(1, Math.min(maxWaiting, Math.ceil(units / meanCost)));
  };

  const pause = (ms: number): Promise<void> =>
    new Promise<void>((resolve) => {
      const done = () => {
        clock.clearTimeout(timer);
        stopper.signal.removeEventListener("abort", done);
        if (wake === done) wake = null;
        resolve();
      };
      const timer = clock.setTimeout(done, ms);
      wake = done;
      stopper.signal.addEventListener("abort", done, { once: true });
    });

  const fail = (error: SourceFailedError): void => {
    if (stopInfo === null) {
      stopInfo = { reason: "source-failed", error };
      report(error, "source");
    }
    void stop();
  };

  const leaveWaiting = (item: Held<T>, phase: "running" | "settling"): void => {
    if (item.phase === "waiting") waiting--;
    if (item.phase === "running") running--;
    item.phase = phase;
    if (phase === "running") running++;
    wake?.();
  };

  /** Runs one settlement call; reports its failure. True when it went through. */
  const settle = async (item: Held<T>, category: "ack" | "nack" | "dead-letter", call: () => Promise<void>): Promise<boolean> => {
    if (item.phase !== "settling") leaveWaiting(item, "settling");
    if (item.renewing) await item.renewing;
    try {
      await call();
      return true;
    } catch (error) {
      if (SourceFailedError.is(error)) fail(error);
      else if (StaleMessageError.is(error)) {
        // A message already counted stale was reported when it went stale.
        if (item.stale === null) {
          counts.stale++;
          report(error, "stale", item.delivery);
        }
      } else {
        counts.sourceErrors++;
        report(error, category, item.delivery);
      }
      return false;
    }
  };

  const deadLetter = async (item: Held<T>, reason: DeadLetterReason): Promise<void> => {
    if (await settle(item, "dead-letter", () => source.deadLetter(item.delivery, reason))) counts.deadLettered++;
  };

  /** Gives an unhandled message back at once (stop, closed limiter), or forgets a stale one. */
  const giveBack = async (item: Held<T>): Promise<void> => {
    const wasStale = item.stale !== null;
    const ok = await settle(item, "nack", () => source.nack(item.delivery, 0));
    if (ok && !wasStale) counts.givenBack++;
  };

  const redeliveryDelay = (deliveryCount: number | null): number => {
    const n = Math.max(1, deliveryCount ?? 1);
    const ceiling = Math.min(maxRedeliveryDelayMs, redeliveryDelayMs * 2 ** Math.min(n - 1, 52));
    return ceiling * (0.5 + random() / 2);
  };

  const markStale = (item: Held<T>, reason: string): void => {
    if (item.stale !== null || item.phase === "settling") return;
    item.stale = new StaleMessageError(source.name, item.delivery.id, reason);
    counts.stale++;
    report(item.stale, "stale", item.delivery);
    item.abort.abort(item.stale);
  };

  const costOf = (message: ReceivedMessage<T>): number => {
    const cost: unknown = typeof costOption === "function" ? costOption(message) : costOption;
    if (!validCost(cost)) throw new ConfigError("cost(message)", cost, "a finite number > 0");
    return cost;
  };

  const handle = async (item: Held<T>): Promise<void> => {
    const delivery = item.delivery;
    if (isUndecodable(delivery)) {
      report(delivery.decodeError, "decode", delivery);
      return deadLetter(item, { category: "decode", error: delivery.decodeError });
    }
    if (delivery.deliveryCount !== null && delivery.deliveryCount > maxDeliveries) {
      const error = new Error(`${source.name}: message ${delivery.id} arrived with ${delivery.deliveryCount} deliveries, more than maxDeliveries (${maxDeliveries}); dead-lettered without running the handler`);
      report(error, "deliveries", delivery);
      return deadLetter(item, { category: "deliveries", error });
    }
    let cost: number;
    try {
      cost = costOf(delivery);
    } catch (error) {
      report(error, "cost", delivery);
      return deadLetter(item, { category: "cost", error });
    }
    try {
      await slots.take(item.abort.signal);
    } catch {
      return giveBack(item);
    }
    try {
      try {
        await limiter.acquire(cost, { signal: item.abort.signal });
      } catch (error) {
        if (CostExceedsLimitError.is(error) || ConfigError.is(error)) {
          report(error, "cost", delivery);
          return await deadLetter(item, { category: "cost", error });
        }
        // Stopped, stale, or the limiter closed: the message goes back for another consumer.
        return await giveBack(item);
      }
      // Only admitted costs shape the window: a bad one never reaches the mean.
      admittedCosts++;
      meanCost += (cost - meanCost) / Math.min(admittedCosts, 100);
      if (item.stale === null && clock.now() >= item.validUntil) markStale(item, "its visibility ran out while it waited for admission");
      if (item.stale !== null) return await giveBack(item);
      leaveWaiting(item, "running");
      let failure: { error: unknown } | null = null;
      try {
        await handler(delivery.body, delivery, { signal: item.abort.signal });
      } catch (error) {
        failure = { error };
      }
      if (failure === null) {
        // Even on a stale receipt: the work is done, and the queue refuses the ack if someone else has it.
        if (await settle(item, "ack", () => source.ack(delivery))) counts.acked++;
        return;
      }
      counts.failed++;
      report(failure.error, "handler", delivery);
      if (delivery.deliveryCount !== null && delivery.deliveryCount >= maxDeliveries) {
        return await deadLetter(item, { category: "handler", error: failure.error });
      }
      if (await settle(item, "nack", () => source.nack(delivery, redeliveryDelay(delivery.deliveryCount)))) counts.nacked++;
    } finally {
      slots.release();
    }
  };

  // Renewal: one timer for all held messages; each is renewed about every third of the
  // visibility, in batches, and counted lost when it could not be renewed in time.
  let renewTimer: TimerHandle | null = null;
  const renewBatch = (items: Held<T>[]): void => {
    const sentAt = clock.now();
    const call = source.renew(items.map((i) => i.delivery)).then(
      (flags) => {
        items.forEach((item, k) => {
          if (flags[k]) {
            counts.renewed++;
            item.validUntil = sentAt + visibilityMs! - marginMs;
            item.renewDueAt = sentAt + renewEveryMs;
          } else {
            markStale(item, "the queue says it is no longer held by this consumer");
          }
        });
      },
      (error: unknown) => {
        if (SourceFailedError.is(error)) return fail(error);
        counts.sourceErrors++;
        report(error, "renew");
        // Try again soon; the message stays ours until validUntil whatever happens.
        for (const item of items) item.renewDueAt = clock.now() + renewEveryMs / 4;
      },
    );
    const settled = call.finally(() => {
      for (const item of items) if (item.renewing === settled) item.renewing = null;
    });
    for (const item of items) item.renewing = settled;
  };
  const tick = (): void => {
    renewTimer = null;
    const now = clock.now();
    const due: Held<T>[] = [];
    for (const item of held) {
      if (item.phase === "settling" || item.stale !== null) continue;
      if (now >= item.validUntil) {
        markStale(item, "its visibility ran out before it could be renewed");
        continue;
      }
      if (item.renewing === null && now >= item.renewDueAt) due.push(item);
    }
    for (let i = 0; i < due.length; i += 100) renewBatch(due.slice(i, i + 100));
    scheduleTick();
  };
  const scheduleTick = (): void => {
    if (renewTimer !== null || visibilityMs === null || held.size === 0) return;
    renewTimer = clock.setTimeout(tick, Math.max(20, renewEveryMs / 4), false);
  };

  const track = (delivery: Delivery<T>, receivedAt: number): void => {
    counts.received++;
    const abort = new AbortController();
    setMaxListeners(0, abort.signal);
    const item: Held<T> = {
      delivery,
      phase: "waiting",
      validUntil: visibilityMs === null ? Infinity : receivedAt + visibilityMs - marginMs,
      renewDueAt: receivedAt + renewEveryMs,
      renewing: null,
      stale: null,
      abort,
    };
    held.add(item);
    waiting++;
    const task = handle(item)
      .catch((error: unknown) => report(error, "handler", delivery))
      .finally(() => {
        if (item.phase === "waiting") waiting--;
        if (item.phase === "running") running--;
        held.delete(item);
        tasks.delete(task);
        wake?.();
      });
    tasks.add(task);
    scheduleTick();
  };

  const loop = async (): Promise<void> => {
    let idleMs = pollIntervalMs;
    while (!stopper.signal.aborted) {
      const w = window();
      const room = Math.min(w - waiting, source.maxBatch);
      // Refill in batches of at least half the window (one message when none waits), so a busy
      // consumer does not make one receive call per admitted message.
      if (room < (waiting === 0 ? 1 : Math.max(1, Math.floor(w / 2)))) {
        // Full (or paused): a message leaving the window wakes the loop; the pace is looked at again soon.
        await pause(100);
        continue;
      }
      let batch: Delivery<T>[];
      const receivedAt = clock.now();
      counts.receives++;
      try {
        batch = await source.receive(room, { signal: stopper.signal, window: w, held: held.size - waiting });
      } catch (error) {
        if (stopper.signal.aborted) break;
        if (SourceFailedError.is(error)) {
          fail(error);
          break;
        }
        counts.sourceErrors++;
        report(error, "receive");
        await pause(idleMs);
        idleMs = Math.min(idleMs * 2, maxPollIntervalMs);
        continue;
      }
      for (const delivery of batch) track(delivery, receivedAt);
      if (batch.length === 0) {
        await pause(idleMs);
        idleMs = Math.min(idleMs * 2, maxPollIntervalMs);
      } else {
        idleMs = pollIntervalMs;
      }
    }
  };

  let stopping: Promise<ConsumerStopped> | null = null;
  const stop = (reason: ConsumerStopped["reason"] = "stop"): Promise<ConsumerStopped> => {
    stopInfo ??= { reason };
    stopping ??= (async () => {
      stopper.abort(new Error("consumer stopped"));
      // Messages still waiting go back now; running handlers finish and settle.
      for (const item of held) if (item.phase === "waiting") item.abort.abort(stopper.signal.reason);
      await looping;
      while (tasks.size > 0) await Promise.allSettled([...tasks]);
      if (renewTimer !== null) clock.clearTimeout(renewTimer);
      renewTimer = null;
      await source.close().catch((error: unknown) => report(error, "receive"));
      if (options.closeLimiter) await limiter.close();
      return stopInfo!;
    })();
    return stopping;
  };
  const looping = loop().catch((error: unknown) => report(error, "receive"));
  // A closed limiter can admit nothing more: stop instead of giving messages back forever.
  const closedPoll = setInterval(() => {
    if (limiter.stats().closed) void stop("limiter-closed");
  }, 250);
  closedPoll.unref();
  const onSignal = () => void stop("signal");
  options.signal?.addEventListener("abort", onSignal, { once: true });
  if (options.signal?.aborted) onSignal();
  const done = looping
    .then(() => stop())
    .finally(() => {
      clearInterval(closedPoll);
      options.signal?.removeEventListener("abort", onSignal);
    });

  return {
    stop: () => stop().then(() => done),
    done,
    stats: () => ({ ...counts, waiting, running, inFlight: held.size, window: window() }),
  };
}

function validCost(cost: unknown): cost is number {
  return typeof cost === "number" && cost > 0 && Number.isFinite(cost);
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

function nonNegativeNumber(name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0) throw new ConfigError(name, value, "a finite number >= 0");
  return value;
}
