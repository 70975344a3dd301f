import type { Channel, ConsumeMessage } from "amqplib";
import { ConfigError } from "../../errors/config-error.js";
import type { QueueSource, ReceivedMessage, ReceiveOptions } from "./queue-source.js";

/** Options of {@link AmqpSource}. */
export interface AmqpSourceOptions<T> {
  /**
   * An amqplib channel (`Channel` or `ConfirmChannel`) that this source alone consumes on; the
   * caller owns it and its connection (the source never closes them). If the channel closes,
   * the broker requeues every unacked message and the source fails its next receive: make a new
   * channel and a new source.
   */
  channel: Channel;
  /** The queue to consume (it must exist: assert it beforehand). */
  queue: string;
  /** Longest a receive waits for a delivery when nothing is buffered, in ms. Default 1000. */
  maxWaitMs?: number;
  /** Turns the message content into a body. Default `JSON.parse` of the UTF-8 text. */
  decode?: (content: Buffer, message: ConsumeMessage) => T;
}

/** basic.qos prefetch-count is a 16-bit field. */
const MAX_PREFETCH = 65_535;

/**
 * AmqpSource consumes a RabbitMQ (AMQP 0-9-1) queue with manual acks. RabbitMQ pushes messages,
 * so the prefetch count is what bounds the pull: it follows the runner's `window` (the messages
 * the held capacity admits soon), and deliveries wait in a small buffer until `receive` hands
 * them out. RabbitMQ applies a per-consumer prefetch only to consumers started after basic.qos,
 * so a resize sets the new prefetch and re-subscribes (cancel, then consume; unacked deliveries
 * of the old subscription stay valid on the channel). It grows at once and shrinks only on a
 * drop of more than a quarter, so a window that wobbles by one does not re-subscribe each time.
 *
 * `ack` is basic.ack; `nack` is basic.nack with requeue. A process that dies leaves its unacked
 * messages to the broker, which requeues them when the connection drops. Message ids are the
 * channel's delivery tags; `deliveryCount` comes from a quorum queue's `x-delivery-count`, is 1
 * for a first delivery and null for a redelivery of a classic queue (which says only "redelivered").
 */
export class AmqpSource<T> implements QueueSource<T> {
  /** `"amqp"`. */
  readonly name = "amqp";
  /** The most a prefetch count can hold back. */
  readonly maxBatch = MAX_PREFETCH;
  private readonly channel: Channel;
  private readonly queue: string;
  private readonly maxWaitMs: number;
  private readonly decode: (content: Buffer, message: ConsumeMessage) => T;
  /** Delivered by the broker, not yet handed out. */
  private buffer: ConsumeMessage[] = [];
  private readonly unsettled = new Map<ReceivedMessage<T>, ConsumeMessage>();
  private consumerTag: string | null = null;
  private prefetch = 0;
  /** The subscription change in progress, so receive and close never overlap one. */
  private subscribing: Promise<void> = Promise.resolve();
  private wakeReceive: (() => void) | null = null;
  private channelGone: Error | null = null;
  private closed = false;
  private readonly onChannelClose = (): void => {
    // The broker requeues everything unacked on a closed channel: the buffer is void.
    this.channelGone ??= new Error("amqp: the channel closed; unacked messages were requeued by the broker");
    this.buffer = [];
    this.consumerTag = null;
    this.wakeReceive?.();
  };

  /** Creates a source; throws ConfigError for bad options. Nothing is consumed before the first receive. */
  constructor(options: AmqpSourceOptions<T>) {
    if (typeof options.queue !== "string") throw new ConfigError("queue", options.queue, "a string");
    const wait = options.maxWaitMs ?? 1000;
    if (typeof wait !== "number" || !Number.isFinite(wait) || wait < 0) throw new ConfigError("maxWaitMs", wait, "a finite number >= 0");
    this.channel = options.channel;
    this.queue = options.queue;
    this.maxWaitMs = wait;
    this.decode = options.decode ?? ((content) => JSON.parse(content.toString("utf8")) as T);
    this.channel.on("close", this.onChannelClose);
  }

  /**
   * Subscribes (or resizes the prefetch to `window`), then hands out up to `max` buffered
   * deliveries, waiting at most `maxWaitMs` (or until aborted) when none are buffered.
   */
  async receive(max: number, options: ReceiveOptions): Promise<ReceivedMessage<T>[]> {
    this.throwIfUnusable();
    const wanted = Math.max(1, Math.min(Math.ceil(options.window), MAX_PREFETCH));
    const step = this.subscribing.then(() => this.subscribe(wanted));
    // A failed (re-)subscription fails this receive only; the next one tries again.
    this.subscribing = step.catch(() => undefined);
    await step;
    this.throwIfUnusable();
    if (this.buffer.length === 0 && !options.signal?.aborted) await this.waitForDelivery(options.signal);
    const taken = this.buffer.splice(0, Math.max(1, Math.floor(max)));
    return taken.map((raw) => {
      const message: ReceivedMessage<T> = { id: String(raw.fields.deliveryTag), body: this.decode(raw.content, raw), deliveryCount: deliveryCount(raw) };
      this.unsettled.set(message, raw);
      return message;
    });
  }

  /** basic.ack. */
  async ack(message: ReceivedMessage<T>): Promise<void> {
    this.channel.ack(this.take(message));
  }

  /** basic.nack with requeue: the broker delivers it again, to this or another consumer. */
  async nack(message: ReceivedMessage<T>): Promise<void> {
    this.channel.nack(this.take(message), false, true);
  }

  /**
   * Cancels the subscription and requeues what was delivered but never handed out. Messages
   * handed out and not settled stay unacked until settled or the channel closes. The channel
   * stays open.
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
    } finally {
      this.buffer = [];
      this.channel.off("close", this.onChannelClose);
    }
  }

  /** Starts the subscription, or re-subscribes when the window moved enough. */
  private async subscribe(window: number): Promise<void> {
    if (this.closed || this.channelGone !== null) return;
    const grow = window > this.prefetch;
    const shrink = window < Math.floor(this.prefetch * 0.75);
    if (this.consumerTag !== null && !grow && !shrink) return;
    const old = this.consumerTag;
    this.consumerTag = null;
    if (old !== null) await this.channel.cancel(old);
    await this.channel.prefetch(window, false);
    this.prefetch = window;
    const reply = await this.channel.consume(this.queue, (raw) => this.deliver(raw), { noAck: false });
    this.consumerTag = reply.consumerTag;
  }

  private deliver(raw: ConsumeMessage | null): void {
    if (raw === null) {
      // The broker cancelled the subscription (queue deleted, node down): subscribe again on the
      // next receive, which fails loudly if the queue is gone.
      this.consumerTag = null;
      this.prefetch = 0;
    } else {
      this.buffer.push(raw);
    }
    this.wakeReceive?.();
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

  private throwIfUnusable(): void {
    if (this.closed) throw new Error("amqp: source is closed");
    if (this.channelGone) throw this.channelGone;
  }

  private take(message: ReceivedMessage<T>): ConsumeMessage {
    const raw = this.unsettled.get(message);
    // Acking a delivery tag twice is a channel error that closes the channel: refuse here instead.
    if (raw === undefined) throw new Error(`amqp: message ${message.id} was already settled or not received here`);
    this.unsettled.delete(message);
    return raw;
  }
}

/** 1 for a first delivery; a quorum queue's x-delivery-count + 1; null for a classic redelivery. */
function deliveryCount(raw: ConsumeMessage): number | null {
  const headers: unknown = raw.properties.headers;
  const count = headers && typeof headers === "object" ? (headers as Record<string, unknown>)["x-delivery-count"] : undefined;
  if (typeof count === "number") return count + 1;
  return raw.fields.redelivered ? null : 1;
}
