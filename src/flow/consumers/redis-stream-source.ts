import { ConfigError } from "../../errors/config-error.js";
import { SourceFailedError } from "../../errors/source-failed-error.js";
import { StaleMessageError } from "../../errors/stale-message-error.js";
import { undecodableMessage, type DeadLetterReason, type Delivery, type QueueSource, type ReceiveOptions } from "./queue-source.js";
import { parseAutoclaimReply, parseFlags, parsePendingCounts, parseReadReply, type EntryItem, type StreamEntry } from "./redis-stream-replies.js";

/**
 * RedisStreamClient is the part of an ioredis client (`Redis` of ioredis 5 or 6) the source uses,
 * so either major version type-checks. Replies are read in RESP2 and RESP3 shapes alike.
 */
export interface RedisStreamClient {
  call(command: string, ...args: (string | number)[]): Promise<unknown>;
  duplicate(): RedisStreamClient;
  quit(): Promise<unknown>;
  disconnect(): void;
  /** ioredis's connection status; `"end"` once the client was quit or gave up reconnecting. */
  readonly status: string;
}

/** Options of {@link RedisStreamSource}. Times are in milliseconds. */
export interface RedisStreamSourceOptions<T> {
  /**
   * An ioredis client (ioredis 5, or 6 with RESP2 or RESP3). The source also opens one connection
   * of its own with `client.duplicate()` for the blocking XREADGROUP, so acks on `client` never
   * wait behind a BLOCK; it closes that connection on `close()`. `client` stays the caller's.
   */
  client: RedisStreamClient;
  /** The stream key. */
  stream: string;
  /** The consumer group; created (with the stream, MKSTREAM) if missing. */
  group: string;
  /** This consumer's name in the group: unique per process, stable across restarts if possible. */
  consumer: string;
  /**
   * How long an entry stays pending (received, not acked) before any consumer of the group may
   * reclaim it with XAUTOCLAIM: the redelivery delay of a message whose processor died, and the
   * source's `visibilityMs` (a consumer renews the entries it holds about every third of it, with
   * XCLAIM … JUSTID). Integer, 1,000 or more. Default 30,000.
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
   * entry has one (`XADD stream * body '{"n":1}'`), otherwise the field record itself. A throw
   * makes the entry an undecodable delivery (dead-lettered by the consumer).
   */
  decode?: (fields: Record<string, string>, id: string) => T;
  /**
   * The stream dead-lettered entries are added to (their fields, plus `dead-letter-id`,
   * `dead-letter-reason` and `dead-letter-error`), in the same atomic script as the XACK. With
   * Redis Cluster it must share the stream's hash slot: use a hash tag (`{orders}` and
   * `{orders}:dead-letter`). Default `<stream>:dead-letter`.
   */
  deadLetterStream?: string;
}

/** Most entries one receive takes; Redis has no limit, this keeps a single reply modest. */
const REDIS_MAX_BATCH = 1000;

/**
 * Claims entries back to this consumer only while it still owns them (another consumer may have
 * reclaimed one, and a plain XCLAIM would take it back from that consumer mid-handler), setting
 * their idle time to ARGV[3]: 0 renews, claimIdleMs − delay schedules a redelivery. JUSTID: the
 * delivery count is not raised. One flag per id.
 */
const CLAIM_IF_OWNED = `
local out = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if p[1] ~= nil and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'IDLE', ARGV[3], 'JUSTID')
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out`;

/** XADD to the dead-letter stream and XACK, atomically, if this consumer still owns the entry. */
const DEAD_LETTER = `
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if p[1] == nil or p[1][2] ~= ARGV[2] then return 0 end
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', KEYS[2], '*', unpack(fields))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
return 1`;

/**
 * RedisStreamSource reads a Redis stream through a consumer group. Each receive first reclaims,
 * with XAUTOCLAIM, entries pending longer than `claimIdleMs` (left by a consumer that died or
 * gave them back), then reads new entries with XREADGROUP … BLOCK `blockMs`. `ack` is XACK (the
 * entry stays in the stream; trim it with MAXLEN/MINID as usual). `renew` resets an owned entry's
 * idle time (XCLAIM … JUSTID in a script that checks the owner first); `nack` backdates it, so
 * XAUTOCLAIM (of any consumer in the group, this one included) delivers it again after the delay,
 * with its delivery count raised. `deadLetter` moves it to the dead-letter stream and acks it.
 * Delivery counts are Redis's own (1 for a new read, the pending entry's count after a reclaim).
 */
export class RedisStreamSource<T> implements QueueSource<T> {
  /** `"redis-stream"`. */
  readonly name = "redis-stream";
  /** 1000 entries per receive. */
  readonly maxBatch = REDIS_MAX_BATCH;
  /** `claimIdleMs`. */
  readonly visibilityMs: number;
  private readonly client: RedisStreamClient;
  private readonly stream: string;
  private readonly group: string;
  private readonly consumer: string;
  private readonly claimIdleMs: number;
  private readonly blockMs: number;
  private readonly startId: string;
  private readonly deadLetterStream: string;
  private readonly decode: (fields: Record<string, string>, id: string) => T;
  /** Handed out and not yet settled: delivery → its entry. */
  private readonly unsettled = new Map<Delivery<T>, StreamEntry>();
  /** The same entries by id, so XAUTOCLAIM never hands out an entry this process still holds. */
  private readonly heldIds = new Set<string>();
  private reader: RedisStreamClient | null = null;
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
    if (typeof options.client?.call !== "function") throw new ConfigError("client", options.client, "an ioredis client");
    this.client = options.client;
    this.stream = options.stream;
    this.group = options.group;
    this.consumer = options.consumer;
    this.claimIdleMs = integerOption("claimIdleMs", options.claimIdleMs, 30_000, 1000, Number.MAX_SAFE_INTEGER);
    this.visibilityMs = this.claimIdleMs;
    this.blockMs = integerOption("blockMs", options.blockMs, 1000, 1, 10_000);
    this.startId = options.startId ?? "0";
    const dead = options.deadLetterStream ?? `${options.stream}:dead-letter`;
    if (typeof dead !== "string" || dead === "" || dead === options.stream) throw new ConfigError("deadLetterStream", dead, "a non-empty string other than the stream");
    this.deadLetterStream = dead;
    this.decode = options.decode ?? defaultDecode<T>;
  }

  /**
   * Takes up to `max` entries: reclaimed ones first, then new ones, blocking at most `blockMs`
   * for new ones. On abort it resolves with what it has; entries a blocked read delivers after
   * the abort are given back (made reclaimable at once).
   */
  async receive(max: number, options: ReceiveOptions): Promise<Delivery<T>[]> {
    this.throwIfUnusable();
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
  async ack(message: Delivery<T>): Promise<void> {
    const entry = this.take(message);
    await this.run(() => this.client.call("XACK", this.stream, this.group, entry.id));
  }

  /**
   * Backdates the entry's last delivery so that XAUTOCLAIM delivers it again `delayMs` from now
   * (at most `claimIdleMs`). Rejects with StaleMessageError if another consumer owns it now.
   */
  async nack(message: Delivery<T>, delayMs: number): Promise<void> {
    const entry = this.take(message);
    const idle = Math.max(0, Math.round(this.claimIdleMs - Math.max(0, delayMs)));
    const [owned] = await this.claimIfOwned([entry.id], idle);
    if (!owned) throw new StaleMessageError(this.name, entry.id, "another consumer reclaimed it");
    // The scan may be past this id: start it over so this consumer can find it again too.
    this.claimCursor = "0-0";
  }

  /** Resets the idle time of the entries this consumer still owns (XCLAIM … IDLE 0 JUSTID). */
  async renew(messages: readonly Delivery<T>[]): Promise<boolean[]> {
    this.throwIfUnusable();
    const ids: string[] = [];
    const at: number[] = [];
    const result = messages.map((m, i) => {
      const entry = this.unsettled.get(m);
      if (entry === undefined) return false;
      ids.push(entry.id);
      at.push(i);
      return true;
    });
    if (ids.length === 0) return result;
    const owned = await this.claimIfOwned(ids, 0);
    owned.forEach((flag, k) => (result[at[k]!] = flag));
    return result;
  }

  /**
   * Adds the entry to the dead-letter stream and XACKs it, atomically. Rejects with
   * StaleMessageError (and moves nothing) if another consumer owns it now.
   */
  async deadLetter(message: Delivery<T>, reason: DeadLetterReason): Promise<void> {
    const entry = this.take(message);
    const fields: string[] = [];
    for (const [key, value] of Object.entries(entry.fields)) fields.push(key, value);
    fields.push("dead-letter-id", entry.id, "dead-letter-reason", reason.category);
    if (reason.error !== undefined) fields.push("dead-letter-error", errorText(reason.error));
    const moved = await this.run(() =>
      this.client.call("EVAL", DEAD_LETTER, 2, this.stream, this.deadLetterStream, this.group, this.consumer, entry.id, ...fields),
    );
    if (Number(moved) !== 1) throw new StaleMessageError(this.name, entry.id, "another consumer reclaimed it");
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

  private throwIfUnusable(): void {
    if (this.closed) throw new Error("redis-stream: source is closed");
    if (this.client.status === "end") throw new SourceFailedError(this.name, "the Redis client was closed (status \"end\"); create a new client and source");
  }

  /** Runs a command; a client that has ended (quit, or gave up reconnecting) is a SourceFailedError. */
  private async run<R>(command: () => Promise<R>): Promise<R> {
    try {
      return await command();
    } catch (error) {
      if (this.client.status === "end") throw new SourceFailedError(this.name, "the Redis client was closed (status \"end\")", error);
      throw error;
    }
  }

  private async claimIfOwned(ids: string[], idleMs: number): Promise<boolean[]> {
    const reply = await this.run(() => this.client.call("EVAL", CLAIM_IF_OWNED, 1, this.stream, this.group, this.consumer, idleMs, ...ids));
    return parseFlags(reply, ids.length);
  }

  private ensureGroup(): Promise<void> {
    this.groupReady ??= this.run(() => this.client.call("XGROUP", "CREATE", this.stream, this.group, this.startId, "MKSTREAM")).then(
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
  private async reclaim(count: number): Promise<StreamEntry[]> {
    const reply = await this.run(() => this.client.call("XAUTOCLAIM", this.stream, this.group, this.consumer, this.claimIdleMs, this.claimCursor, "COUNT", count));
    const { cursor, items } = parseAutoclaimReply(reply);
    this.claimCursor = cursor;
    const entries: StreamEntry[] = [];
    const vanished: string[] = [];
    for (const item of items) {
      if (item.kind === "deleted") {
        // Redis 6.2 returns an entry deleted from the stream as [id, nil] and keeps it pending:
        // nothing can process it, so ack it away. (Redis 7 drops such entries itself.)
        vanished.push(item.id);
        continue;
      }
      // An entry this process still holds (slow admission) is not delivered twice here.
      if (!this.heldIds.has(item.entry.id)) entries.push(item.entry);
    }
    if (vanished.length > 0) await this.run(() => this.client.call("XACK", this.stream, this.group, ...vanished));
    return entries;
  }

  /** Hands reclaimed entries out with their delivery counts, read from XPENDING in one call. */
  private async withDeliveryCounts(entries: StreamEntry[]): Promise<Delivery<T>[]> {
    const first = entries[0]!.id;
    const last = entries[entries.length - 1]!.id;
    const reply = await this.run(() => this.client.call("XPENDING", this.stream, this.group, first, last, entries.length + this.heldIds.size, this.consumer));
    const counts = parsePendingCounts(reply);
    return entries.map((entry) => this.handOne(entry, counts.get(entry.id) ?? null));
  }

  /** XREADGROUP of new entries: without BLOCK on `client` (`blockMs` null), else blocking on the source's own connection. */
  private async readNew(count: number, blockMs: number | null): Promise<StreamEntry[]> {
    const block = blockMs === null ? [] : ["BLOCK", blockMs];
    const connection = blockMs === null ? this.client : this.readerConnection();
    const reply = await this.run(() => connection.call("XREADGROUP", "GROUP", this.group, this.consumer, "COUNT", count, ...block, "STREAMS", this.stream, ">"));
    return parseReadReply(reply, this.stream).flatMap((item: EntryItem) => (item.kind === "entry" ? [item.entry] : []));
  }

  /**
   * A blocking read on the source's own connection. Redis cannot cancel a BLOCK, so an abort
   * resolves the receive at once and the read's late entries are given back when it returns.
   */
  private readBlocking(count: number, signal: AbortSignal | undefined): Promise<StreamEntry[]> {
    const read = this.readNew(count, this.blockMs);
    if (!signal) return read;
    return new Promise<StreamEntry[]>((resolve, reject) => {
      let aborted = false;
      const onAbort = () => {
        aborted = true;
        const late = read
          .then((entries) => (entries.length > 0 ? this.claimIfOwned(entries.map((e) => e.id), this.claimIdleMs).then(() => undefined) : undefined))
          .catch(() => undefined)
          .finally(() => this.lateReads.delete(late));
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

  private readerConnection(): RedisStreamClient {
    this.reader ??= this.client.duplicate();
    return this.reader;
  }

  private hand(entries: StreamEntry[], deliveryCount: number | null): Delivery<T>[] {
    return entries.map((entry) => this.handOne(entry, deliveryCount));
  }

  private handOne(entry: StreamEntry, deliveryCount: number | null): Delivery<T> {
    let message: Delivery<T>;
    try {
      message = { id: entry.id, body: this.decode(entry.fields, entry.id), deliveryCount };
    } catch (decodeError) {
      message = undecodableMessage(entry.id, deliveryCount, decodeError);
    }
    this.unsettled.set(message, entry);
    this.heldIds.add(entry.id);
    return message;
  }

  private take(message: Delivery<T>): StreamEntry {
    const entry = this.unsettled.get(message);
    if (entry === undefined) throw new Error(`redis-stream: message ${message.id} was already settled or not received here`);
    this.unsettled.delete(message);
    this.heldIds.delete(entry.id);
    return entry;
  }
}

function defaultDecode<T>(fields: Record<string, string>): T {
  return (fields.body !== undefined ? JSON.parse(fields.body) : fields) as T;
}

function errorText(error: unknown): string {
  const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  return message.length > 500 ? `${message.slice(0, 500)}…` : message;
}

function integerOption(name: string, value: unknown, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(name, value, `an integer from ${min} to ${max}`);
  }
  return value;
}
