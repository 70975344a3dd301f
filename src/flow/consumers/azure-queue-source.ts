import type { QueueClient } from "@azure/storage-queue";
import { ConfigError } from "../../errors/config-error.js";
import type { QueueSource, ReceivedMessage, ReceiveOptions } from "./queue-source.js";

/** Options of {@link AzureQueueSource}. */
export interface AzureQueueSourceOptions<T> {
  /**
   * The queue, from `@azure/storage-queue` (works with Azurite). Create its service client with
   * small `retryOptions` (e.g. `{ maxTries: 2, tryTimeoutInMs: 10_000 }`) so a dead server fails
   * calls in seconds rather than after the SDK's long default retries.
   */
  queueClient: QueueClient;
  /**
   * How long a received message stays invisible to others, in ms (whole seconds, 1 s to 7 days;
   * default 30,000). An unsettled message (its processor died) is delivered again after it.
   */
  visibilityTimeoutMs?: number;
  /** Turns the message text into a body. Default `JSON.parse`. */
  decode?: (text: string) => T;
}

/** Azure returns at most 32 messages per Get Messages call. */
const AZURE_MAX_BATCH = 32;

/**
 * AzureQueueSource reads an Azure Storage queue: Get Messages with a visibility timeout, Delete
 * Message to ack, Update Message with visibility 0 to nack (visible again at once). Azure has no
 * long poll, so an empty receive returns at once and the consumer backs off.
 */
export class AzureQueueSource<T> implements QueueSource<T> {
  /** `"azure-queue"`. */
  readonly name = "azure-queue";
  /** 32, Azure's limit per call. */
  readonly maxBatch = AZURE_MAX_BATCH;
  private readonly client: QueueClient;
  private readonly visibilitySeconds: number;
  private readonly decode: (text: string) => T;
  private readonly receipts = new Map<ReceivedMessage<T>, string>();

  /** Creates a source; throws ConfigError for a visibility timeout Azure would refuse. */
  constructor(options: AzureQueueSourceOptions<T>) {
    this.client = options.queueClient;
    const ms = options.visibilityTimeoutMs ?? 30_000;
    if (typeof ms !== "number" || !Number.isInteger(ms / 1000) || ms < 1000 || ms > 7 * 86_400_000) {
      throw new ConfigError("visibilityTimeoutMs", ms, "whole seconds from 1000 to 604800000 ms");
    }
    this.visibilitySeconds = ms / 1000;
    this.decode = options.decode ?? ((text) => JSON.parse(text) as T);
  }

  /** Receives up to `max` (≤ 32) messages, invisible to others for the visibility timeout. */
  async receive(max: number, options: ReceiveOptions): Promise<ReceivedMessage<T>[]> {
    const response = await this.client.receiveMessages({
      numberOfMessages: Math.max(1, Math.min(max, AZURE_MAX_BATCH)),
      visibilityTimeout: this.visibilitySeconds,
      abortSignal: options.signal,
    });
    return response.receivedMessageItems.map((item) => {
      const message: ReceivedMessage<T> = { id: item.messageId, body: this.decode(item.messageText), deliveryCount: item.dequeueCount };
      this.receipts.set(message, item.popReceipt);
      return message;
    });
  }

  /** Deletes the message. */
  async ack(message: ReceivedMessage<T>): Promise<void> {
    const receipt = this.take(message);
    await this.client.deleteMessage(message.id, receipt);
  }

  /** Makes the message visible again at once. */
  async nack(message: ReceivedMessage<T>): Promise<void> {
    const receipt = this.take(message);
    await this.client.updateMessage(message.id, receipt, undefined, 0);
  }

  /** Nothing to give back: Azure holds no messages for a client. */
  async close(): Promise<void> {
    this.receipts.clear();
  }

  private take(message: ReceivedMessage<T>): string {
    const receipt = this.receipts.get(message);
    if (receipt === undefined) throw new Error(`azure-queue: message ${message.id} was already settled or not received here`);
    this.receipts.delete(message);
    return receipt;
  }
}
