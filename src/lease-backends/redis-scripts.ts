import { createHash } from "node:crypto";
import type { Cluster, Redis } from "ioredis";
import { ConfigError } from "../errors/config-error.js";

/**
 * The Redis wire format shared by RedisLeaseBackend and RedlockLeaseBackend: key names, stored
 * values and the Lua scripts that make every lease operation one atomic round trip. Private to
 * the two backends.
 */

/** A client the Redis backends accept: a single ioredis connection or a Cluster. */
export type RedisClient = Redis | Cluster;

/** Key names of one resource; all share the `{resource}` hash tag, so they live in one Cluster slot. */
export interface ResourceKeys {
  readonly plan: string;
  readonly grace: string;
  readonly fence: string;
  /** The prefix of partition keys; partition `n` is `${partitionBase}${n}`. */
  readonly partitionBase: string;
}

/** The keys of `resource` under `keyPrefix`. */
export function resourceKeys(keyPrefix: string, resource: string): ResourceKeys {
  const base = `${keyPrefix}{${resource}}`;
  return { plan: `${base}:plan`, grace: `${base}:grace`, fence: `${base}:fence`, partitionBase: `${base}:p:` };
}

/**
 * A partition key holds `token|fence|holderId`. The token is a fixed-length UUID and comes first,
 * so scripts compare the prefix `token|` and a holderId containing `|` cannot confuse them.
 */
export interface StoredGrant {
  readonly token: string;
  readonly fencingToken: number | null;
  readonly holderId: string;
}

/** Parses a partition key's value; null when it is not in the expected form. */
export function parseGrant(value: string): StoredGrant | null {
  const first = value.indexOf("|");
  const second = first < 0 ? -1 : value.indexOf("|", first + 1);
  if (second < 0) return null;
  const fence = Number(value.slice(first + 1, second));
  return {
    token: value.slice(0, first),
    fencingToken: Number.isSafeInteger(fence) ? fence : null,
    holderId: value.slice(second + 1),
  };
}

// Lua shared by the scripts: the plan's partition count, 0 for a plan that is not valid JSON (such
// a plan grants nothing; ensurePlan reports it as a mismatch).
const PARTITIONS_OF = `
local function partitions_of(plan)
  local ok, decoded = pcall(cjson.decode, plan)
  if ok and type(decoded) == 'table' and type(decoded.partitions) == 'number' then return decoded.partitions end
  return 0
end
`;

/**
 * ensurePlan. KEYS: plan, grace, fence. ARGV: canonical plan, graceMs.
 * Returns {1} when it stored the plan, {0, stored} when a plan was there already.
 * A new fence counter starts at the server's time in microseconds, so fencing tokens keep growing
 * across a restart that lost the counter (as long as the server's clock does not go back).
 */
const ENSURE_PLAN = `
local stored = redis.call('GET', KEYS[1])
if stored then return {0, stored} end
redis.call('SET', KEYS[1], ARGV[1])
local grace = tonumber(ARGV[2])
if grace > 0 then redis.call('SET', KEYS[2], '1', 'PX', grace) end
if redis.call('EXISTS', KEYS[3]) == 0 then
  local t = redis.call('TIME')
  redis.call('SET', KEYS[3], string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2])))
end
return {1}
`;

/**
 * tryAcquire. KEYS: plan, grace, fence, then one partition key per candidate. ARGV: token,
 * holderId, ttlMs, then the candidates' indexes. Takes the first free candidate in order.
 * Returns -1 without a plan, -2 during grace, 0 when all are taken, {partition, fence} on a grant.
 */
const ACQUIRE = `${PARTITIONS_OF}
local plan = redis.call('GET', KEYS[1])
if not plan then return -1 end
if redis.call('EXISTS', KEYS[2]) == 1 then return -2 end
local n = partitions_of(plan)
for i = 4, #KEYS do
  local p = tonumber(ARGV[i])
  if p and p >= 0 and p < n and p == math.floor(p) and redis.call('EXISTS', KEYS[i]) == 0 then
    local fence = redis.call('INCR', KEYS[3])
    -- Lua's .. would print a large number as 1.79e+15; %.0f is exact below 2^53.
    redis.call('SET', KEYS[i], ARGV[1] .. '|' .. string.format('%.0f', fence) .. '|' .. ARGV[2], 'PX', ARGV[3])
    return {p, fence}
  end
end
return 0
`;

/** renew. KEYS: partition key. ARGV: `token|`, ttlMs. Returns 1 when extended, 0 when not ours. */
const RENEW = `
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
`;

/** release. KEYS: partition key. ARGV: `token|`. Returns 1 when deleted, 0 when not ours. */
const RELEASE = `
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
`;

/**
 * inspect. KEYS: plan. ARGV: partition key base. Returns {} without a plan, else
 * {plan, value0, pttl0, value1, pttl1, ...} with '' and -2 for a free partition.
 * The partition keys are derived rather than declared: their count is only known from the plan.
 * They share the plan key's hash tag, so in a Cluster they are in the same slot.
 */
const INSPECT = `${PARTITIONS_OF}
local plan = redis.call('GET', KEYS[1])
if not plan then return {} end
local out = {plan}
local n = partitions_of(plan)
if n > 10000 then n = 10000 end
for p = 0, n - 1 do
  local key = ARGV[1] .. p
  local v = redis.call('GET', key)
  if v then
    out[#out + 1] = v
    out[#out + 1] = redis.call('PTTL', key)
  else
    out[#out + 1] = ''
    out[#out + 1] = -2
  end
end
return out
`;

/** LuaScript runs one script by EVALSHA, falling back to EVAL once when the server lacks it. */
export class LuaScript {
  /** The script's SHA1, as EVALSHA wants it. */
  readonly sha: string;

  constructor(readonly source: string) {
    this.sha = createHash("sha1").update(source).digest("hex");
  }

  /** Runs the script on `client` with `keys` and `args`; one round trip when the script is cached. */
  async run(client: RedisClient, keys: readonly string[], args: readonly (string | number)[]): Promise<unknown> {
    try {
      return await client.evalsha(this.sha, keys.length, ...keys, ...args);
    } catch (error) {
      if (!(error instanceof Error) || !error.message.startsWith("NOSCRIPT")) throw error;
      // EVAL also caches the script, so the next call is a single EVALSHA again.
      return client.eval(this.source, keys.length, ...keys, ...args);
    }
  }
}

/** The scripts of the Redis backends. */
export const scripts = {
  ensurePlan: new LuaScript(ENSURE_PLAN),
  acquire: new LuaScript(ACQUIRE),
  renew: new LuaScript(RENEW),
  release: new LuaScript(RELEASE),
  inspect: new LuaScript(INSPECT),
} as const;

/** What the acquire script answered. */
export type AcquireReply =
  | { kind: "missing" }
  | { kind: "grace" }
  | { kind: "taken" }
  | { kind: "granted"; partition: number; fencingToken: number };

/** Decodes the acquire script's reply; throws on anything unexpected. */
export function parseAcquireReply(reply: unknown): AcquireReply {
  if (reply === -1) return { kind: "missing" };
  if (reply === -2) return { kind: "grace" };
  if (reply === 0) return { kind: "taken" };
  if (Array.isArray(reply) && typeof reply[0] === "number" && typeof reply[1] === "number") {
    return { kind: "granted", partition: reply[0], fencingToken: reply[1] };
  }
  throw new Error(`unexpected acquire reply ${JSON.stringify(reply)}`);
}

/** What the ensurePlan script answered: created, or the plan already stored. */
export type EnsurePlanReply = { created: true } | { created: false; stored: string };

/** Decodes the ensurePlan script's reply; throws on anything unexpected. */
export function parseEnsurePlanReply(reply: unknown): EnsurePlanReply {
  if (Array.isArray(reply) && reply[0] === 1) return { created: true };
  if (Array.isArray(reply) && reply[0] === 0 && typeof reply[1] === "string") return { created: false, stored: reply[1] };
  throw new Error(`unexpected ensurePlan reply ${JSON.stringify(reply)}`);
}

/** One partition as the inspect script saw it. */
export interface InspectedPartition {
  readonly grant: StoredGrant | null;
  /** PTTL in ms; null when free. */
  readonly pttlMs: number | null;
}

/** What the inspect script answered: null without a plan. */
export interface InspectReply {
  readonly plan: string;
  readonly partitions: InspectedPartition[];
}

/** Decodes the inspect script's reply; throws on anything unexpected. */
export function parseInspectReply(reply: unknown): InspectReply | null {
  if (!Array.isArray(reply)) throw new Error(`unexpected inspect reply ${JSON.stringify(reply)}`);
  if (reply.length === 0) return null;
  const [plan, ...rest] = reply as unknown[];
  if (typeof plan !== "string") throw new Error("unexpected inspect reply: plan is not a string");
  const partitions: InspectedPartition[] = [];
  for (let i = 0; i + 1 < rest.length; i += 2) {
    const value = rest[i];
    const pttl = rest[i + 1];
    const grant = typeof value === "string" && value !== "" ? parseGrant(value) : null;
    partitions.push({ grant, pttlMs: grant && typeof pttl === "number" && pttl >= 0 ? pttl : null });
  }
  return { plan, partitions };
}

/** The script argument that identifies a grant: its token and the separator. */
export function tokenPrefix(token: string): string {
  return `${token}|`;
}

/**
 * The TTL sent to the server: whole ms, rounded up. A longer server TTL only delays the next
 * holder; a shorter one could free a partition before the holder's local deadline.
 */
export function serverTtl(ttlMs: number): number {
  if (typeof ttlMs !== "number" || !Number.isFinite(ttlMs) || ttlMs <= 0) {
    throw new ConfigError("ttlMs", ttlMs, "a finite number > 0");
  }
  return Math.ceil(ttlMs);
}
