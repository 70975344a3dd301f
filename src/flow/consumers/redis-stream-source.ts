import type { Redis } from "ioredis";
import { ConfigError } from "../../errors/config-error.js";
import type { QueueSource, ReceivedMessage, ReceiveOptions } from "./queue-source.js";

/** Options of {@link RedisStreamSource}. Times are in milliseconds. */
export interface RedisStreamSourceOptions<T> {
  /**
   * An ioredis client. The source also opens one connection of its own with `client.duplicate()`
   * for the blocking XREADGROUP, so acks on `client` never wait behind a BLOCK; it closes that
   * connection on `close()`. `client` itself stays the caller's.
   */
  client: Redis;
  /** The stream key. */
  stream: string;
  /** The consumer group; created (with the stream, MKSTREAM) if missing. */
  group: string;
  /** This consumer's name in the group: unique per process, stable across restarts if possible. */
  consumer: string;
  /**
   * How long an entry stays pending (received, not acked) before any consumer of the group may
   * reclaim it with XAUTOCLAIM: the redelivery delay of a message whose processor died. Default
   * 30,000. Keep it well above the time a message waits for admission plus its handler's run.
   */
  claimIdleMs?: number;
  /** Longest a receive blocks in XREADGROUP when the stream is idle, 1 to 10,000. Default 1000. */
  blockMs?: number;
  /**
   * Where a newly created group starts reading: `"0"` (default) takes the entries already in
   * the stream, `"$"` only those added later. Ignored when the group exists.
   */
  startId?: string;
  /**
   * Turns an entry's fields into a body. Default: `JSON.parse` of the field `body` when the
   * entry has one (`XADD stream * body '{"n":1}'`), otherwise the field record itself.
   */
  decode?: (fields: Record<string, string>, id: string) => T;
}

/** One stream entry as Redis returns it. */
interface Entry {
  readonly id: string;
  readonly fields: Record<string, string>;
}

/** Most entries one receive takes; Redis has no limit, this keeps a single reply modest. */
const REDIS_MAX_BATCH = 1000;

/**
 * RedisStreamSource reads a Redis stream through a consumer group. Each receive first reclaims,
 * with XAUTOCLAIM, entries pending longer than `claimIdleMs` (left by a consumer that died or
 * gave them back), then reads new entries with XREADGROUP ... BLOCK `blockMs`. `ack` is XACK (the
 * entry stays in the stream; trim it with MAXLEN/MINID as usual). `nack` makes the entry
 * reclaimable at once: XCLAIM ... IDLE `claimIdleMs` JUSTID backdates its delivery time, so the
 * next XAUTOCLAIM of any consumer in the group (this one included) delivers it again, with its
 * delivery count raised.
 */
export class RedisStreamSource<T> implements QueueSource<T> {
  /** `"redis-stream"`. */
  readonly name = "redis-stream";
  /** 1000 entries per receive. */
  readonly maxBatch = REDIS_MAX_BATCH;
  private readonly client: Redis;
  private readonly stream: string;
  private readonly group: string;
  private readonly consumer: string;
  private readonly claimIdleMs: number;
  private readonly blockMs: number;
  private readonly startId: string;
  private readonly decode: (fields: Record<string, string>, id: string) => T;
  /** Handed out and not yet settled: message → entry id. */
  private readonly unsettled = new Map<ReceivedMessage<T>, string>();
  /** The same entries by id, so XAUTOCLAIM never hands out an entry this process still holds. */
  private readonly heldIds = new Set<string>();
  private reader: Redis | null = null;
  private groupReady: Promise<void> | null = null;
  /** Where the next XAUTOCLAIM continues its scan of the pending entries list. */
  private claimCursor = "0-0";
  /** Reads whose receive was aborted: close() waits for them to give their entries back. */
  private readonly lateReads = new Set<Promise<void>>();
  private closed = false;

  /** Creates a source; throws ConfigError for bad options. Nothing is sent to Redis before the first receive. */
  constructor(options: RedisStreamSourceOptions<T>) {
    for (const key of ["stream", "group", "consumer"] as const) {
      const value: unknown = options[key];
      if (typeof value !== "string" || value === "") throw new ConfigError(key, value, "a non-empty string");
    }
    this.client = options.client;
    this.stream = options.stream;
    this.group = options.group;
    this.consumer = options.consumer;
    this.claimIdleMs = integerOption("claimIdleMs", options.claimIdleMs, 30_000, 1, Number.MAX_SAFE_INTEGER);
    this.blockMs = integerOption("blockMs", options.blockMs, 1000, 1, 10_000);
    this.startId = options.startId ?? "0";
    this.decode = options.decode ?? defaultDecode<T>;
  }

  /**
   * Takes up to `max` entries: reclaimed ones first, then new ones, blocking at most `blockMs`
   * for new ones. On abort it resolves with what it has; entries a blocked read delivers after
   * the abort are given back (made reclaimable at once).
   */
  async receive(max: number, options: ReceiveOptions): Promise<ReceivedMessage<T>[]> {
    if (this.closed) throw new Error("redis-stream: source is closed");
    const count = Math.max(1, Math.min(Math.floor(max), REDIS_MAX_BATCH));
    await this.ensureGroup();
    const claimed = await this.reclaim(count);
    const messages = claimed.length > 0 ? await this.withDeliveryCounts(claimed) : [];
    const room = count - messages.length;
    // Reclaimed entries are ready work: return them without blocking for more.
    if (room <= 0 || options.signal?.aborted) return messages;
    if (messages.length > 0) return messages.concat(this.hand(await this.readNew(room, null), 1));
    return messages.concat(this.hand(await this.readBlocking(room, options.signal), 1));
  }

  /** XACKs the entry. An entry another consumer reclaimed and acked meanwhile is acked already: fine. */
  async ack(message: ReceivedMessage<T>): Promise<void> {
    const id = this.take(message);
    await this.client.call("XACK", this.stream, this.group, id);
  }

  /** Backdates the entry's delivery so that the next XAUTOCLAIM (of any consumer) delivers it again. */
  async nack(message: ReceivedMessage<T>): Promise<void> {
    const id = this.take(message);
    await this.giveBack([id]);
  }

  /**
   * Stops receiving: waits for an aborted blocking read to give its entries back and closes the
   * source's own connection. Messages handed out and not settled stay pending (reclaimed after
   * `claimIdleMs`); `client` is left open.
   */
  async close(): Promise<void> {
    this.closed = true;
    while (this.lateReads.size > 0) await Promise.allSettled([...this.lateReads]);
    const reader = this.reader;
    this.reader = null;
    if (reader) await reader.quit().catch(() => reader.disconnect());
    this.unsettled.clear();
    this.heldIds.clear();
  }

  private ensureGroup(): Promise<void> {
    this.groupReady ??= this.client.call("XGROUP", "CREATE", this.stream, this.group, this.startId, "MKSTREAM").then(
      () => undefined,
      (error: unknown) => {
        // BUSYGROUP: another consumer created it first, which is what we wanted.
        if (error instanceof Error && error.message.startsWith("BUSYGROUP")) return;
        this.groupReady = null;
        throw error;
      },
    );
    return this.groupReady;
  }

  /** XAUTOCLAIMs up to `count` entries pending longer than claimIdleMs, continuing the last scan. */
  private async reclaim(count: number): Promise<Entry[]> {
    const reply = await this.client.call("XAUTOCLAIM", this.stream, this.group, this.consumer, this.claimIdleMs, this.claimCursor, "COUNT", count);
    if (!Array.isArray(reply)) throw new Error(`redis-stream: unexpected XAUTOCLAIM reply ${String(reply)}`);
    this.claimCursor = typeof reply[0] === "string" ? reply[0] : "0-0";
    const raw: unknown[] = Array.isArray(reply[1]) ? (reply[1] as unknown[]) : [];
    const entries: Entry[] = [];
    const vanished: string[] = [];
    for (const item of raw) {
      const entry = parseEntry(item);
      if (entry === null) {
        // Redis 6.2 returns an entry deleted from the stream as [id, nil] and keeps it pending:
        // nothing can process it, so ack it away. (Redis 7 drops such entries itself.)
        if (Array.isArray(item) && typeof item[0] === "string") vanished.push(item[0]);
        continue;
      }
      // An entry this process still holds (slow admission) is not delivered twice here.
      if (!this.heldIds.has(entry.id)) entries.push(entry);
    }
    if (vanished.length > 0) await this.client.call("XACK", this.stream, this.group, ...vanished);
    return entries;
  }

  /** Hands reclaimed entries out with their delivery counts, read from XPENDING in one call. */
  private async withDeliveryCounts(entries: Entry[]): Promise<ReceivedMessage<T>[]> {
    const first = entries[0]!.id;
    const last = entries[entries.length - 1]!.id;
    const reply = await this.client.call("XPENDING", this.stream, this.group, first, last, entries.length + this.heldIds.size, this.consumer);
    const counts = new Map<string, number>();
    if (Array.isArray(reply)) {
      for (const row of reply as unknown[]) {
        if (Array.isArray(row) && typeof row[0] === "string" && typeof row[3] === "number") counts.set(row[0], row[3]);
      }
    }
    return entries.map((entry) => this.handOne(entry, counts.get(entry.id) ?? null));
  }

  /** XREADGROUP of new entries: without BLOCK on `client` (`blockMs` null), else blocking on the source's own connection. */
  private async readNew(count: number, blockMs: number | null): Promise<Entry[]> {
    const block = blockMs === null ? [] : ["BLOCK", blockMs];
    const connection = blockMs === null ? this.client : this.readerConnection();
    const reply = await connection.call("XREADGROUP", "GROUP", this.group, this.consumer, "COUNT", count, ...block, "STREAMS", this.stream, ">");
    return parseReadReply(reply);
  }

  /**
   * A blocking read on the source's own connection. Redis cannot cancel a BLOCK, so an abort
   * resolves the receive at once and the read's late entries are given back when it returns.
   */
  private readBlocking(count: number, signal: AbortSignal | undefined): Promise<Entry[]> {
    const read = this.readNew(count, this.blockMs);
    if (!signal) return read;
    return new Promise<Entry[]>((resolve, reject) => {
      let aborted = false;
      const onAbort = () => {
        aborted = true;
        const late = read.then(
          (entries) => (entries.length > 0 ? this.giveBack(entries.map((e) => e.id)) : undefined),
          () => undefined,
        ).catch(() => undefined).finally(() => this.lateReads.delete(late));
        this.lateReads.add(late);
        resolve([]);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      read.then(
        (entries) => {
          signal.removeEventListener("abort", onAbort);
          if (!aborted) resolve(entries);
        },
        (error: unknown) => {
          signal.removeEventListener("abort", onAbort);
          if (!aborted) reject(error);
        },
      );
    });
  }

  private readerConnection(): Redis {
    this.reader ??= this.client.duplicate();
    return this.reader;
  }

  private hand(entries: Entry[], deliveryCount: number | null): ReceivedMessage<T>[] {
    return entries.map((entry) => this.handOne(entry, deliveryCount));
  }

  private handOne(entry: Entry, deliveryCount: number | null): ReceivedMessage<T> {
    const message: ReceivedMessage<T> = { id: entry.id, body: this.decode(entry.fields, entry.id), deliveryCount };
    this.unsettled.set(message, entry.id);
    this.heldIds.add(entry.id);
    return message;
  }

  /** Backdates the entries' last delivery by claimIdleMs (JUSTID: no delivery counted here). */
  private async giveBack(ids: string[]): Promise<void> {
    await this.client.call("XCLAIM", this.stream, this.group, this.consumer, 0, ...ids, "IDLE", this.claimIdleMs, "JUSTID");
    // The scan may be past these ids: start it over so this consumer finds them next receive.
    this.claimCursor = "0-0";
  }

  private take(message: ReceivedMessage<T>): string {
    const id = this.unsettled.get(message);
    if (id === undefined) throw new Error(`redis-stream: message ${message.id} was already settled or not received here`);
    this.unsettled.delete(message);
    this.heldIds.delete(id);
    return id;
  }
}

function defaultDecode<T>(fields: Record<string, string>): T {
  return (fields.body !== undefined ? JSON.parse(fields.body) : fields) as T;
}

/** [id, [field, value, ...]] → Entry; null for a deleted entry's [id, nil]. */
function parseEntry(item: unknown): Entry | null {
  if (!Array.isArray(item) || typeof item[0] !== "string" || !Array.isArray(item[1])) return null;
  const flat = item[1] as unknown[];
  const fields: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) fields[String(flat[i])] = String(flat[i + 1]);
  return { id: item[0], fields };
}

/** XREADGROUP's [[stream, [entry, ...]]] (or nil on timeout) → entries. */
function parseReadReply(reply: unknown): Entry[] {
  if (!Array.isArray(reply)) return [];
  const entries: Entry[] = [];
  for (const streamReply of reply as unknown[]) {
    if (!Array.isArray(streamReply) || !Array.isArray(streamReply[1])) continue;
    for (const item of streamReply[1] as unknown[]) {
      const entry = parseEntry(item);
      if (entry) entries.push(entry);
    }
  }
  return entries;
}

function integerOption(name: string, value: unknown, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(name, value, `an integer from ${min} to ${max}`);
  }
  return value;
}
