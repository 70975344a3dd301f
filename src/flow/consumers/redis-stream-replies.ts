// Parsers for the stream commands' replies, in every shape ioredis hands them out: RESP2 (ioredis 5,
// or ioredis 6 with `protocol: 2`), RESP3 with ioredis 6's default `replyMapping: "legacy"` (a
// map reply becomes a flat [key, value, key, value] array), and RESP3 with `replyMapping:
// "resp3"` (a map becomes a plain object, or a Map). XREADGROUP is the command whose shape
// differs: RESP2 answers [[stream, entries], ...], RESP3 a map {stream: entries}.

/** One stream entry. */
export interface StreamEntry {
  readonly id: string;
  readonly fields: Record<string, string>;
}

/** What one entry of a reply is: an entry, or the id of an entry deleted from the stream. */
export type EntryItem = { readonly kind: "entry"; readonly entry: StreamEntry } | { readonly kind: "deleted"; readonly id: string };

function text(value: unknown): string | null {
  if (typeof value === "string") return value;
  if (Buffer.isBuffer(value)) return value.toString("utf8");
  if (typeof value === "number") return String(value);
  return null;
}

/** A field list: the flat [field, value, ...] array of every protocol, or a map of them. */
function parseFields(value: unknown): Record<string, string> | null {
  const fields: Record<string, string> = {};
  if (Array.isArray(value)) {
    for (let i = 0; i + 1 < value.length; i += 2) {
      const key = text(value[i]);
      const v = text(value[i + 1]);
      if (key !== null && v !== null) fields[key] = v;
    }
    return fields;
  }
  if (value instanceof Map) {
    for (const [k, v] of value) {
      const key = text(k);
      const val = text(v);
      if (key !== null && val !== null) fields[key] = val;
    }
    return fields;
  }
  if (typeof value === "object" && value !== null) {
    for (const [k, v] of Object.entries(value)) {
      const val = text(v);
      if (val !== null) fields[k] = val;
    }
    return fields;
  }
  return null;
}

/** [id, fields] → an entry; [id, nil] (an entry deleted from the stream) → its id; else null. */
export function parseEntryItem(item: unknown): EntryItem | null {
  if (!Array.isArray(item)) return null;
  const id = text(item[0]);
  if (id === null) return null;
  if (item[1] === null || item[1] === undefined) return { kind: "deleted", id };
  const fields = parseFields(item[1]);
  return fields === null ? null : { kind: "entry", entry: { id, fields } };
}

/** An array of [id, fields] items → its items (malformed ones skipped). */
export function parseEntryList(list: unknown): EntryItem[] {
  if (!Array.isArray(list)) return [];
  const items: EntryItem[] = [];
  for (const raw of list) {
    const item = parseEntryItem(raw);
    if (item) items.push(item);
  }
  return items;
}

/**
 * The entries of `stream` in an XREADGROUP (or XREAD) reply: nil (timeout) gives none; RESP2's
 * [[name, entries], ...], RESP3's flat [name, entries, ...] and a map {name: entries} are read alike.
 */
export function parseReadReply(reply: unknown, stream: string): EntryItem[] {
  if (reply === null || reply === undefined) return [];
  if (reply instanceof Map) {
    for (const [key, value] of reply) if (text(key) === stream) return parseEntryList(value);
    return [];
  }
  if (Array.isArray(reply)) {
    if (reply.length === 0) return [];
    if (Array.isArray(reply[0])) {
      // RESP2: one [name, entries] pair per stream.
      for (const pair of reply) if (Array.isArray(pair) && text(pair[0]) === stream) return parseEntryList(pair[1]);
      return [];
    }
    // RESP3 map flattened: name, entries, name, entries, ...
    for (let i = 0; i + 1 < reply.length; i += 2) if (text(reply[i]) === stream) return parseEntryList(reply[i + 1]);
    return [];
  }
  if (typeof reply === "object") {
    const value = (reply as Record<string, unknown>)[stream];
    return parseEntryList(value);
  }
  throw new Error(`redis-stream: unexpected XREADGROUP reply ${String(reply)}`);
}

/** XAUTOCLAIM's [cursor, entries, deleted ids?] (the same in RESP2 and RESP3). */
export function parseAutoclaimReply(reply: unknown): { cursor: string; items: EntryItem[] } {
  if (!Array.isArray(reply)) throw new Error(`redis-stream: unexpected XAUTOCLAIM reply ${String(reply)}`);
  const cursor = text(reply[0]) ?? "0-0";
  const items = parseEntryList(reply[1]);
  // Redis 7 lists entries deleted from the stream apart (and drops them from the pending list).
  if (Array.isArray(reply[2])) {
    for (const id of reply[2]) {
      const deleted = text(id);
      if (deleted !== null) items.push({ kind: "deleted", id: deleted });
    }
  }
  return { cursor, items };
}

/**
 * XPENDING's extended form → delivery count by id. Rows are [id, consumer, idle, count] in both
 * protocols; a map-shaped row (some proxies) is read by its keys too.
 */
export function parsePendingCounts(reply: unknown): Map<string, number> {
  const counts = new Map<string, number>();
  if (!Array.isArray(reply)) return counts;
  for (const row of reply) {
    if (Array.isArray(row)) {
      const id = text(row[0]);
      const count = Number(row[3]);
      if (id !== null && Number.isFinite(count)) counts.set(id, count);
    }
  }
  return counts;
}

/** A script's array of 0/1 integers → booleans (integers look the same in RESP2 and RESP3). */
export function parseFlags(reply: unknown, expected: number): boolean[] {
  if (!Array.isArray(reply) || reply.length !== expected) throw new Error(`redis-stream: unexpected script reply ${JSON.stringify(reply)}`);
  return reply.map((flag) => Number(flag) === 1);
}
