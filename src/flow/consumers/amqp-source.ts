import { EventEmitter } from "node:events";
import type { Channel, ConfirmChannel, ConsumeMessage, Options } from "amqplib";
import { ConfigError } from "../../errors/config-error.js";
import { SourceFailedError } from "../../errors/source-failed-error.js";
import { undecodableMessage, type DeadLetterReason, type Delivery, type QueueSource, type ReceiveOptions } from "./queue-source.js";

/** Options of {@link AmqpSource}. */
export interface AmqpSourceOptions<T> {
  /**
   * An amqplib channel that this source alone consumes on; the caller owns it and its connection
   * (the source never closes them). A `ConfirmChannel` is best: a redelivery is republished and
   * the original acked only once the broker confirmed the copy. The source listens for the
   * channel's `error` and `close`: a channel the broker closed fails the source with
   * `SourceFailedError` (the broker requeues every unacked message); make a new channel and source.
   */
  channel: Channel | ConfirmChannel;
  /** The queue to consume (it must exist: assert it beforehand, with a dead-letter exchange for `deadLetter`). */
  queue: string;
  /** Longest a receive waits for a delivery when nothing is buffered, in ms. Default 1000. */
  maxWaitMs?: number;
  /** Turns the message content into a body. Default `JSON.parse` of the UTF-8 text. A throw makes it an undecodable delivery. */
  decode?: (content: Buffer, message: ConsumeMessage) => T;
  /**
   * A fixed per-consumer prefetch (1 to 65,535) set once before subscribing, instead of the
   * channel-level prefetch that follows the consumer's window. Quorum queues need it: RabbitMQ
   * refuses channel-level (global) prefetch on them and closes the connection. Default: none.
   */
  fixedPrefetch?: number;
}

/** basic.qos prefetch-count is a 16-bit field. */
const MAX_PREFETCH = 65_535;
/**
 * The header a republished redelivery carries: how many deliveries the message had before this
 * copy. RabbitMQ classic queues count nothing (only a `redelivered` flag), so the source counts.
 */
export const AMQP_DELIVERIES_HEADER = "x-prl-deliveries";

/**
 * AmqpSource consumes a RabbitMQ (AMQP 0-9-1) queue with manual acks, over one long-lived
 * subscription. RabbitMQ pushes messages, so the prefetch is what bounds the pull: a channel-level
 * prefetch (basic.qos global) of the consumer's `window + held` plus redeliveries waiting out their
 * delay, which RabbitMQ applies to the running subscription at once. It grows at once and shrinks
 * on a drop of more than a quarter, so a window that wobbles by one does not send basic.qos each time.
 *
 * `ack` is basic.ack. `nack` waits out the delay holding the delivery, then republishes a copy to
 * the queue with {@link AMQP_DELIVERIES_HEADER} raised and acks the original: so a classic queue's
 * delivery count is known, and a failing message does not come straight back. `deadLetter` is
 * basic.reject without requeue, which the queue's dead-letter exchange (`x-dead-letter-exchange`)
 * takes; without one RabbitMQ discards the message. `deliveryCount` is the header's count plus one,
 * plus a quorum queue's `x-delivery-count` (or one for a classic queue's `redelivered` flag, which a
 * consumer crash sets): exact on quorum queues, a lower bound on classic ones after crashes.
 */
export class AmqpSource<T> implements QueueSource<T> {
  /** `"amqp"`. */
  readonly name = "amqp";
  /** The most a prefetch count can hold back. */
  readonly maxBatch = MAX_PREFETCH;
  /** null: a delivery is this consumer's until acked or the channel closes. */
  readonly visibilityMs = null;
  private readonly channel: Channel | ConfirmChannel;
  private readonly queue: string;
  private readonly maxWaitMs: number;
  private readonly fixedPrefetch: number | null;
  private readonly decode: (content: Buffer, message: ConsumeMessage) => T;
  /** Delivered by the broker, not yet handed out. */
  private buffer: ConsumeMessage[] = [];
  private readonly unsettled = new Map<Delivery<T>, ConsumeMessage>();
  /** Failed deliveries held until their redelivery delay is over, and how to cut it short. */
  private readonly delayed = new Map<ConsumeMessage, { timer: NodeJS.Timeout; flush: () => void; done: Promise<void> }>();
  private consumerTag: string | null = null;
  private prefetch = 0;
  /** The subscription or qos change in progress, so receive and close never overlap one. */
  private subscribing: Promise<void> = Promise.resolve();
  private wakeReceive: (() => void) | null = null;
  private channelError: unknown = null;
  /** Why the connection closed, when it took the channel with it (a connection-level error, e.g. 540). */
  private connectionError: unknown = null;
  private channelClosed = false;
  private gone: SourceFailedError | null = null;
  private closed = false;
  private readonly onChannelError = (error: unknown): void => {
    // amqplib emits "error" before "close" when the broker closes the channel with an error;
    // without a listener it would be thrown as an uncaught exception.
    this.channelError ??= error;
  };
  private readonly onConnectionClose = (error: unknown): void => {
    this.connectionError ??= error ?? null;
  };
  private readonly onChannelClose = (): void => {
    this.channelClosed = true;
    // A connection-level error closes every channel first, without a channel "error"; the
    // connection's "close" (which amqplib emits right after, in the same turn) says why.
    if (this.channelError === null) connectionOf(this.channel)?.once("close", this.onConnectionClose);
    // The broker requeues everything unacked on a closed channel: the buffer is void.
    this.buffer = [];
    this.consumerTag = null;
    for (const held of this.delayed.values()) clearTimeout(held.timer);
    this.delayed.clear();
    this.wakeReceive?.();
  };

  /** The SourceFailedError once the channel is closed, naming the broker's reason where it gave one. */
  private get channelGone(): SourceFailedError | null {
    if (!this.channelClosed) return null;
    if (this.gone === null) {
      const cause = this.channelError ?? this.connectionError ?? undefined;
      const reason = cause instanceof Error ? `the channel was closed: ${cause.message}` : "the channel was closed";
      this.gone = new SourceFailedError(this.name, `${reason}; its unacked messages were requeued by the broker`, cause);
    }
    return this.gone;
  }

  /** Creates a source; throws ConfigError for bad options. Nothing is consumed before the first receive. */
  constructor(options: AmqpSourceOptions<T>) {
    if (typeof options.channel?.consume !== "function") throw new ConfigError("channel", options.channel, "an amqplib Channel or ConfirmChannel");
    if (typeof options.queue !== "string") throw new ConfigError("queue", options.queue, "a string");
    const wait = options.maxWaitMs ?? 1000;
    if (typeof wait !== "number" || !Number.isFinite(wait) || wait < 0) throw new ConfigError("maxWaitMs", wait, "a finite number >= 0");
    const fixed = options.fixedPrefetch;
    if (fixed !== undefined && (typeof fixed !== "number" || !Number.isInteger(fixed) || fixed < 1 || fixed > MAX_PREFETCH)) {
      throw new ConfigError("fixedPrefetch", fixed, `an integer from 1 to ${MAX_PREFETCH}`);
    }
    this.channel = options.channel;
    this.queue = options.queue;
    this.maxWaitMs = wait;
    this.fixedPrefetch = fixed ?? null;
    this.decode = options.decode ?? ((content) => JSON.parse(content.toString("utf8")) as T);
    this.channel.on("error", this.onChannelError);
    this.channel.on("close", this.onChannelClose);
  }

  /**
   * Subscribes once (or adjusts the channel's prefetch to `window + held`), then hands out up to
   * `max` buffered deliveries, waiting at most `maxWaitMs` (or until aborted) when none are
   * buffered. Rejects with SourceFailedError once the channel is gone.
   */
  async receive(max: number, options: ReceiveOptions): Promise<Delivery<T>[]> {
    this.throwIfUnusable();
    const wanted = Math.max(1, Math.min(Math.ceil(options.window + (options.held ?? 0)) + this.delayed.size, MAX_PREFETCH));
    const step = this.subscribing.then(() => this.subscribe(wanted));
    // A failed subscription fails this receive only; the next one tries again (or finds the channel gone).
    this.subscribing = step.catch(() => undefined);
    try {
      await step;
    } catch (error) {
      // A consume on a missing queue closes the channel: report that as the source's end.
      await new Promise((resolve) => setImmediate(resolve));
      this.throwIfUnusable();
      throw error;
    }
    this.throwIfUnusable();
    if (this.buffer.length === 0 && !options.signal?.aborted) await this.waitForDelivery(options.signal);
    this.throwIfUnusable();
    const taken = this.buffer.splice(0, Math.max(1, Math.floor(max)));
    return taken.map((raw) => {
      const deliveryCount = countDeliveries(raw);
      let message: Delivery<T>;
      try {
        message = { id: String(raw.fields.deliveryTag), body: this.decode(raw.content, raw), deliveryCount };
      } catch (decodeError) {
        message = undecodableMessage(String(raw.fields.deliveryTag), deliveryCount, decodeError);
      }
      this.unsettled.set(message, raw);
      return message;
    });
  }

  /** basic.ack. */
  async ack(message: Delivery<T>): Promise<void> {
    const raw = this.take(message);
    this.guard(() => this.channel.ack(raw));
  }

  /**
   * Holds the delivery for `delayMs`, then republishes a copy with its delivery count and acks the
   * original (on a ConfirmChannel, after the broker confirmed the copy). Resolves once the delay
   * is scheduled; `close()` cuts remaining delays short.
   */
  async nack(message: Delivery<T>, delayMs: number): Promise<void> {
    const raw = this.take(message);
    this.throwIfUnusable();
    const count = message.deliveryCount ?? countDeliveries(raw);
    let release!: () => void;
    const elapsed = new Promise<void>((resolve) => (release = resolve));
    const timer = setTimeout(release, Math.max(0, delayMs));
    const done = elapsed.then(() => this.republish(raw, count)).finally(() => this.delayed.delete(raw));
    // A failure here (the channel closed meanwhile) leaves the original unacked: the broker requeues it.
    done.catch(() => undefined);
    this.delayed.set(raw, { timer, flush: release, done });
  }

  /** Nothing to renew on RabbitMQ: true for every delivery still held on an open channel. */
  async renew(messages: readonly Delivery<T>[]): Promise<boolean[]> {
    return messages.map((m) => this.channelGone === null && this.unsettled.has(m));
  }

  /** basic.reject without requeue: the queue's dead-letter exchange takes it (RabbitMQ adds an `x-death` header). */
  async deadLetter(message: Delivery<T>, _reason: DeadLetterReason): Promise<void> {
    const raw = this.take(message);
    this.guard(() => this.channel.reject(raw, false));
  }

  /**
   * Cancels the subscription, requeues what was delivered but never handed out and republishes
   * delayed redeliveries at once. Messages handed out and not settled stay unacked until settled
   * or the channel closes. The channel stays open.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.wakeReceive?.();
    await this.subscribing;
    const tag = this.consumerTag;
    this.consumerTag = null;
    try {
      // Deliveries may arrive until cancel-ok; they land in the buffer and are requeued below.
      if (tag !== null && this.channelGone === null) await this.channel.cancel(tag);
      if (this.channelGone === null) for (const raw of this.buffer) this.channel.nack(raw, false, true);
      const pending = [...this.delayed.values()];
      for (const held of pending) {
        clearTimeout(held.timer);
        held.flush();
      }
      await Promise.allSettled(pending.map((held) => held.done));
    } finally {
      this.buffer = [];
      this.channel.off("close", this.onChannelClose);
      this.channel.off("error", this.onChannelError);
      connectionOf(this.channel)?.off("close", this.onConnectionClose);
    }
  }

  /** Starts the one subscription, or adjusts the channel-level prefetch when the target moved enough. */
  private async subscribe(target: number): Promise<void> {
    if (this.closed || this.channelGone !== null) return;
    if (this.fixedPrefetch !== null) {
      if (this.consumerTag !== null) return;
      if (this.prefetch !== this.fixedPrefetch) await this.channel.prefetch(this.fixedPrefetch, false);
      this.prefetch = this.fixedPrefetch;
    } else {
      const grow = target > this.prefetch;
      const shrink = target < Math.floor(this.prefetch * 0.75);
      if (grow || shrink) {
        // global = true: one limit for every unacked delivery on the channel, changed in place for
        // the running subscription (a per-consumer limit applies only to later subscriptions).
        await this.channel.prefetch(target, true);
        this.prefetch = target;
      }
      if (this.consumerTag !== null) return;
    }
    const reply = await this.channel.consume(this.queue, (raw) => this.deliver(raw), { noAck: false });
    this.consumerTag = reply.consumerTag;
  }

  private deliver(raw: ConsumeMessage | null): void {
    if (raw === null) {
      // The broker cancelled the subscription (queue deleted, node down): subscribe again on the
      // next receive, which fails the source if the queue is gone.
      this.consumerTag = null;
    } else {
      this.buffer.push(raw);
    }
    this.wakeReceive?.();
  }

  private async republish(raw: ConsumeMessage, deliveries: number): Promise<void> {
    this.throwIfUnusable();
    const headers: Record<string, unknown> = { ...(raw.properties.headers ?? {}) };
    // The broker's own count belongs to the original; the copy starts a new one.
    delete headers["x-delivery-count"];
    headers[AMQP_DELIVERIES_HEADER] = deliveries;
    const properties: Options.Publish = { ...definedProperties(raw), headers };
    const channel = this.channel;
    if ("waitForConfirms" in channel) {
      await new Promise<void>((resolve, reject) => {
        this.guard(() => channel.sendToQueue(this.queue, raw.content, properties, (error: unknown) => (error ? reject(error) : resolve())));
      });
    } else {
      this.guard(() => channel.sendToQueue(this.queue, raw.content, properties));
    }
    this.guard(() => channel.ack(raw));
  }

  private waitForDelivery(signal: AbortSignal | undefined): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", done);
        this.wakeReceive = null;
        resolve();
      };
      const timer = setTimeout(done, this.maxWaitMs);
      signal?.addEventListener("abort", done, { once: true });
      this.wakeReceive = done;
    });
  }

  /** Runs a channel operation; amqplib throws synchronously on a closed channel. */
  private guard(operation: () => unknown): void {
    this.throwIfUnusable();
    try {
      operation();
    } catch (error) {
      throw this.channelGone ?? new SourceFailedError(this.name, "the channel is closed", error);
    }
  }

  private throwIfUnusable(): void {
    if (this.channelGone) throw this.channelGone;
    if (this.closed) throw new Error("amqp: source is closed");
  }

  private take(message: Delivery<T>): ConsumeMessage {
    const raw = this.unsettled.get(message);
    // Acking a delivery tag twice is a channel error that closes the channel: refuse here instead.
    if (raw === undefined) throw new Error(`amqp: message ${message.id} was already settled or not received here`);
    this.unsettled.delete(message);
    return raw;
  }
}

/** amqplib's connection under a channel (an EventEmitter), where it has one. */
function connectionOf(channel: Channel | ConfirmChannel): Pick<EventEmitter, "once" | "off"> | null {
  const connection = (channel as unknown as { connection?: unknown }).connection;
  return connection instanceof EventEmitter ? connection : null;
}

/** Deliveries so far, this one included: see {@link AmqpSource}. */
function countDeliveries(raw: ConsumeMessage): number {
  const headers: Record<string, unknown> = raw.properties.headers ?? {};
  const prior = Number(headers[AMQP_DELIVERIES_HEADER]);
  const quorum = headers["x-delivery-count"];
  const returned = typeof quorum === "number" ? quorum : raw.fields.redelivered ? 1 : 0;
  return (Number.isInteger(prior) && prior > 0 ? prior : 0) + returned + 1;
}

/** The message's properties that amqplib's publish accepts, without the unset ones. */
function definedProperties(raw: ConsumeMessage): Options.Publish {
  const p = raw.properties;
  const out: Record<string, unknown> = {};
  const keys = ["contentType", "contentEncoding", "deliveryMode", "priority", "correlationId", "replyTo", "expiration", "messageId", "timestamp", "type", "userId", "appId"] as const;
  for (const key of keys) if (p[key] !== undefined && p[key] !== null) out[key] = p[key];
  return out as Options.Publish;
}
