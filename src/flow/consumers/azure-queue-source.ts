import type { QueueClient } from "@azure/storage-queue";
import { ConfigError } from "../../errors/config-error.js";
import { StaleMessageError } from "../../errors/stale-message-error.js";
import { undecodableMessage, type DeadLetterReason, type Delivery, type QueueSource, type ReceiveOptions } from "./queue-source.js";

/** Options of {@link AzureQueueSource}. */
export interface AzureQueueSourceOptions<T> {
  /**
   * The queue, from `@azure/storage-queue` (works with Azurite). Create its service client with
   * small `retryOptions` (e.g. `{ maxTries: 2, tryTimeoutInMs: 10_000 }`) so a dead server fails
   * calls in seconds rather than after the SDK's long default retries.
   */
  queueClient: QueueClient;
  /**
   * How long a received (or renewed) message stays invisible to others, in ms: whole seconds,
   * 1 s to 7 days; default 30,000. A consumer renews the messages it holds about every third of
   * it; an unsettled message (its processor died) is delivered again after it.
   */
  visibilityTimeoutMs?: number;
  /** Turns the message text into a body. Default `JSON.parse`. A throw makes it an undecodable delivery. */
  decode?: (text: string) => T;
  /**
   * Where dead-lettered messages go (their text, unchanged). Default: the queue `<name>-poison` in
   * the same account with the same credentials, as Azure Functions do; created when first needed.
   */
  poisonQueueClient?: QueueClient;
}

/** Azure returns at most 32 messages per Get Messages call. */
const AZURE_MAX_BATCH = 32;
/** Azure queue names: 3 to 63 lowercase letters, digits and single hyphens. */
const QUEUE_NAME = /^[a-z0-9](?:[a-z0-9]|-(?!-)){1,61}[a-z0-9]$/;

/** A received message's receipt as Azure knows it. */
interface Receipt {
  popReceipt: string;
  readonly text: string;
}

/**
 * AzureQueueSource reads an Azure Storage queue: Get Messages with a visibility timeout, Delete
 * Message to ack, Update Message to renew (visibility extended, new pop receipt) and to nack
 * (visible again after the delay). `deadLetter` copies the text to the poison queue, then deletes
 * the message (a crash between the two leaves a copy in both: at least once, as Azure Functions).
 * Delivery counts are Azure's `dequeueCount`. Azure has no long poll, so an empty receive returns
 * at once and the consumer backs off.
 */
export class AzureQueueSource<T> implements QueueSource<T> {
  /** `"azure-queue"`. */
  readonly name = "azure-queue";
  /** 32, Azure's limit per call. */
  readonly maxBatch = AZURE_MAX_BATCH;
  /** `visibilityTimeoutMs`. */
  readonly visibilityMs: number;
  private readonly client: QueueClient;
  private readonly poison: QueueClient;
  private poisonReady: Promise<void> | null = null;
  private readonly visibilitySeconds: number;
  private readonly decode: (text: string) => T;
  private readonly receipts = new Map<Delivery<T>, Receipt>();

  /** Creates a source; throws ConfigError for a visibility timeout Azure would refuse, or a poison queue it cannot name. */
  constructor(options: AzureQueueSourceOptions<T>) {
    if (typeof options.queueClient?.receiveMessages !== "function") throw new ConfigError("queueClient", options.queueClient, "a QueueClient of @azure/storage-queue");
    this.client = options.queueClient;
    const ms = options.visibilityTimeoutMs ?? 30_000;
    if (typeof ms !== "number" || !Number.isInteger(ms / 1000) || ms < 1000 || ms > 7 * 86_400_000) {
      throw new ConfigError("visibilityTimeoutMs", ms, "whole seconds from 1000 to 604800000 ms");
    }
    this.visibilitySeconds = ms / 1000;
    this.visibilityMs = ms;
    this.decode = options.decode ?? ((text) => JSON.parse(text) as T);
    this.poison = options.poisonQueueClient ?? derivePoisonQueue(options.queueClient);
  }

  /** Receives up to `max` (≤ 32) messages, invisible to others for the visibility timeout. */
  async receive(max: number, options: ReceiveOptions): Promise<Delivery<T>[]> {
    const response = await this.client.receiveMessages({
      numberOfMessages: Math.max(1, Math.min(max, AZURE_MAX_BATCH)),
      visibilityTimeout: this.visibilitySeconds,
      abortSignal: options.signal,
    });
    return response.receivedMessageItems.map((item) => {
      let message: Delivery<T>;
      try {
        message = { id: item.messageId, body: this.decode(item.messageText), deliveryCount: item.dequeueCount };
      } catch (decodeError) {
        message = undecodableMessage(item.messageId, item.dequeueCount, decodeError);
      }
      this.receipts.set(message, { popReceipt: item.popReceipt, text: item.messageText });
      return message;
    });
  }

  /** Deletes the message. Rejects with StaleMessageError when its pop receipt is no longer valid. */
  async ack(message: Delivery<T>): Promise<void> {
    const receipt = this.take(message);
    await this.call(message, () => this.client.deleteMessage(message.id, receipt.popReceipt));
  }

  /** Makes the message visible again after `delayMs`, rounded up to whole seconds (0: at once). */
  async nack(message: Delivery<T>, delayMs: number): Promise<void> {
    const receipt = this.take(message);
    const seconds = Math.min(7 * 86_400, Math.max(0, Math.ceil(delayMs / 1000)));
    await this.call(message, () => this.client.updateMessage(message.id, receipt.popReceipt, undefined, seconds));
  }

  /** Extends each message's visibility by the visibility timeout (Update Message; the pop receipt changes). */
  async renew(messages: readonly Delivery<T>[]): Promise<boolean[]> {
    let failure: unknown = null;
    const flags = await Promise.all(
      messages.map(async (message) => {
        const receipt = this.receipts.get(message);
        if (receipt === undefined) return false;
        try {
          const response = await this.client.updateMessage(message.id, receipt.popReceipt, undefined, this.visibilitySeconds);
          if (response.popReceipt) receipt.popReceipt = response.popReceipt;
          return true;
        } catch (error) {
          if (isLostReceipt(error)) {
            this.receipts.delete(message);
            return false;
          }
          failure ??= error;
          return true;
        }
      }),
    );
    // A call that could not be made says nothing about the message: let the caller retry.
    if (failure !== null) throw failure;
    return flags;
  }

  /** Copies the message text to the poison queue, then deletes the message. */
  async deadLetter(message: Delivery<T>, _reason: DeadLetterReason): Promise<void> {
    const receipt = this.take(message);
    this.poisonReady ??= this.poison.createIfNotExists().then(
      () => undefined,
      (error: unknown) => {
        this.poisonReady = null;
        throw error;
      },
    );
    await this.poisonReady;
    await this.poison.sendMessage(receipt.text);
    await this.call(message, () => this.client.deleteMessage(message.id, receipt.popReceipt));
  }

  /** Nothing to give back: Azure holds no messages for a client. */
  async close(): Promise<void> {
    this.receipts.clear();
  }

  /** Runs a call on one message's receipt; a receipt Azure no longer accepts is a StaleMessageError. */
  private async call(message: Delivery<T>, request: () => Promise<unknown>): Promise<void> {
    try {
      await request();
    } catch (error) {
      if (isLostReceipt(error)) throw new StaleMessageError(this.name, message.id, `Azure answered ${errorCode(error)}`);
      throw error;
    }
  }

  private take(message: Delivery<T>): Receipt {
    const receipt = this.receipts.get(message);
    if (receipt === undefined) throw new Error(`azure-queue: message ${message.id} was already settled or not received here`);
    this.receipts.delete(message);
    return receipt;
  }
}

function errorCode(error: unknown): string {
  const e = error as { statusCode?: unknown; code?: unknown; details?: { errorCode?: unknown } };
  return `${String(e.statusCode)} ${String(e.details?.errorCode ?? e.code ?? "")}`.trim();
}

/** 404 MessageNotFound or 400 PopReceiptMismatch: the message was deleted, or someone else received it since. */
function isLostReceipt(error: unknown): boolean {
  if (typeof error !== "object" || error === null) return false;
  const e = error as { statusCode?: unknown; code?: unknown; details?: { errorCode?: unknown } };
  const code = e.details?.errorCode ?? e.code;
  return e.statusCode === 404 || code === "PopReceiptMismatch" || code === "MessageNotFound";
}

/**
 * The queue `<name>-poison` beside `client`, sharing its request pipeline (credentials, retry
 * options). The SDK builds a QueueClient from a URL and a pipeline; the pipeline is the client's
 * own (a documented constructor argument, kept on the instance), so no SDK import is needed here.
 */
function derivePoisonQueue(client: QueueClient): QueueClient {
  const name = `${client.name}-poison`;
  if (!QUEUE_NAME.test(name)) {
    throw new ConfigError("poisonQueueClient", undefined, "a QueueClient", `the default poison queue name "${name}" is not a valid Azure queue name (3-63 characters); pass poisonQueueClient`);
  }
  const pipeline = (client as unknown as { pipeline?: unknown }).pipeline;
  const Ctor = client.constructor as unknown as new (url: string, pipeline: unknown) => QueueClient;
  if (pipeline === undefined || typeof Ctor !== "function") {
    throw new ConfigError("poisonQueueClient", undefined, "a QueueClient", "the poison queue cannot be derived from this queueClient; pass poisonQueueClient");
  }
  const url = new URL(client.url);
  const segments = url.pathname.split("/");
  segments[segments.length - 1] = encodeURIComponent(name);
  url.pathname = segments.join("/");
  return new Ctor(url.toString(), pipeline);
}
