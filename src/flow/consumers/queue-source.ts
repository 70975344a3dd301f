/** MessageInfo is what every delivery from a durable queue carries, decoded or not. */
export interface MessageInfo {
  /** The queue's id of the message (Azure message id, stream entry id, AMQP delivery tag). */
  readonly id: string;
  /**
   * How many times the queue has delivered it, counting this one; null where the source cannot
   * tell. A lower bound where the queue counts only some redeliveries (see each source).
   */
  readonly deliveryCount: number | null;
}

/** ReceivedMessage is one message taken from a durable queue, decoded, and not yet settled. */
export interface ReceivedMessage<T> extends MessageInfo {
  /** The decoded payload. */
  readonly body: T;
}

/**
 * UndecodableMessage is a delivery whose payload the source's `decode` rejected. It is settled
 * like any other (a consumer dead-letters it), but never handed to a handler.
 */
export interface UndecodableMessage extends MessageInfo {
  /** What `decode` threw. */
  readonly decodeError: unknown;
  /** There is none: reading it throws `decodeError`, as decoding did. */
  readonly body: never;
}

/** undecodableMessage makes the {@link UndecodableMessage} a source hands out for a payload `decode` rejected. */
export function undecodableMessage(id: string, deliveryCount: number | null, decodeError: unknown): UndecodableMessage {
  return Object.defineProperties({} as UndecodableMessage, {
    id: { value: id, enumerable: true },
    deliveryCount: { value: deliveryCount, enumerable: true },
    decodeError: { value: decodeError, enumerable: true },
    body: {
      enumerable: false,
      get(): never {
        throw decodeError;
      },
    },
  });
}

/** Delivery is what {@link QueueSource.receive} hands out: a decoded message or an undecodable one. */
export type Delivery<T> = ReceivedMessage<T> | UndecodableMessage;

/** isUndecodable tells an {@link UndecodableMessage} from a decoded {@link ReceivedMessage}. */
export function isUndecodable<T>(delivery: Delivery<T>): delivery is UndecodableMessage {
  return "decodeError" in delivery;
}

/** Options of {@link QueueSource.receive}. */
export interface ReceiveOptions {
  /** Aborts a waiting receive; it then resolves with what it has (possibly nothing). */
  signal?: AbortSignal;
  /**
   * How many messages the consumer is prepared to hold waiting for admission right now, those it
   * already holds waiting included (its pull window, from the limiter's effective pace).
   */
  window: number;
  /**
   * How many messages the consumer holds outside that window (handlers running, settling). A
   * push-based queue (RabbitMQ) bounds unacked deliveries by `window + held`. Default 0.
   */
  held?: number;
}

/** Why a message goes to the dead-letter destination, for {@link QueueSource.deadLetter}. */
export interface DeadLetterReason {
  /**
   * `"decode"`: the payload could not be decoded; `"cost"`: its cost could not be computed or
   * can never be admitted; `"handler"`: the handler failed on its last allowed delivery;
   * `"deliveries"`: it arrived with more deliveries than allowed (a handler that crashes the
   * process, for instance) and was not handled again.
   */
  readonly category: "decode" | "cost" | "handler" | "deliveries";
  /** The error behind it, if any. */
  readonly error?: unknown;
}

/**
 * QueueSource is a durable queue as a consumer sees it: receive a few messages, keep them while
 * they wait and run (`renew`), then settle each exactly once with `ack` (done, delete it), `nack`
 * (deliver it again after a delay) or `deadLetter` (move it where poison messages go). A message
 * that is never settled (the process died) comes back by itself: Azure's visibility timeout, a
 * Redis Streams pending entry reclaimed by XAUTOCLAIM, or RabbitMQ's requeue on channel close.
 */
export interface QueueSource<T> {
  /** A short name for messages, e.g. `"azure-queue"`. */
  readonly name: string;
  /** Most messages one `receive` returns (Azure: 32). */
  readonly maxBatch: number;
  /**
   * How long, in ms, a receive or a successful `renew` keeps a message from every other consumer,
   * counted from when the call was sent; null when the source holds its messages for as long as
   * it is open (RabbitMQ: until the channel closes), so no renewal is needed.
   */
  readonly visibilityMs: number | null;
  /**
   * Takes up to `max` messages (1 ≤ max ≤ maxBatch); waits at most a short poll (about a second)
   * and resolves with an empty array when nothing is available. A payload that cannot be decoded
   * is handed out as an {@link UndecodableMessage}, never as a failed receive. Rejects with
   * `SourceFailedError` when the source can never receive again.
   */
  receive(max: number, options: ReceiveOptions): Promise<Delivery<T>[]>;
  /** Settles `message` as processed; the queue deletes it. */
  ack(message: Delivery<T>): Promise<void>;
  /**
   * Settles `message` as failed: the queue delivers it again after about `delayMs` (0: at once),
   * to this or another consumer, with its delivery count raised.
   */
  nack(message: Delivery<T>, delayMs: number): Promise<void>;
  /**
   * Extends how long each message stays with this consumer by `visibilityMs` from when the call
   * is sent. One boolean per message, in order: false when the message is no longer this
   * consumer's (another one reclaimed it, or it was settled). Rejects when the queue could not
   * be asked (the messages may still be held: try again).
   */
  renew(messages: readonly Delivery<T>[]): Promise<boolean[]>;
  /** Moves `message` to the source's dead-letter destination and removes it from the queue. */
  deadLetter(message: Delivery<T>, reason: DeadLetterReason): Promise<void>;
  /** Stops receiving and gives back whatever was received but never handed out. */
  close(): Promise<void>;
}
