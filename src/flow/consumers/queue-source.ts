/** ReceivedMessage is one message taken from a durable queue and not yet settled. */
export interface ReceivedMessage<T> {
  /** The queue's id of the message (Azure message id, stream entry id, AMQP delivery tag). */
  readonly id: string;
  /** The decoded payload. */
  readonly body: T;
  /** How many times the queue has delivered it, counting this one; null where the queue does not say. */
  readonly deliveryCount: number | null;
}

/** Options of {@link QueueSource.receive}. */
export interface ReceiveOptions {
  /** Aborts a waiting receive; it then resolves with what it has (possibly nothing) or rejects with the reason. */
  signal?: AbortSignal;
  /**
   * How many unsettled messages the consumer is prepared to hold right now (its window, sized
   * from the limiter's held capacity). Push-based queues (RabbitMQ) size their prefetch to it.
   */
  window: number;
}

/**
 * QueueSource is a durable queue as a consumer sees it: receive a few messages, then settle each
 * exactly once with `ack` (done, delete it) or `nack` (make it available again). A message that
 * is never settled (the process died) comes back by itself: Azure's visibility timeout, a Redis
 * Streams pending entry reclaimed by XAUTOCLAIM, or RabbitMQ's requeue on channel close.
 */
export interface QueueSource<T> {
  /** A short name for messages, e.g. `"azure-queue"`. */
  readonly name: string;
  /** Most messages one `receive` returns (Azure: 32). */
  readonly maxBatch: number;
  /**
   * Takes up to `max` messages (1 ≤ max ≤ maxBatch); waits at most a short poll (about a second)
   * and resolves with an empty array when nothing is available.
   */
  receive(max: number, options: ReceiveOptions): Promise<ReceivedMessage<T>[]>;
  /** Settles `message` as processed; the queue deletes it. */
  ack(message: ReceivedMessage<T>): Promise<void>;
  /** Settles `message` as failed; the queue delivers it again (to this or another consumer). */
  nack(message: ReceivedMessage<T>): Promise<void>;
  /** Stops receiving and gives back whatever was received but never handed out. */
  close(): Promise<void>;
}
