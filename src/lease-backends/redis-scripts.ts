import { createHash } from "node:crypto";
import type { Cluster, Redis } from "ioredis";

/**
 * The Redis wire format shared by RedisLeaseBackend and RedlockLeaseBackend: key names, stored
 * values and the Lua scripts that make every operation one atomic round trip. Private to the two
 * backends.
 */

/** A client the Redis backends accept: a single ioredis connection or a Cluster. */
export type RedisClient = Redis | Cluster;

/** Key names of one resource; all share the `{resource}` hash tag, so they live in one Cluster slot. */
export interface ResourceKeys {
  /** The stored plan (`{"epoch":E,"plan":{…}}`). */
  readonly plan: string;
  /** The `run_id` of the server that last touched the resource. */
  readonly server: string;
  /** Exists (with a PX expiry) while a grace period runs. */
  readonly grace: string;
  /** The fencing counter. Outlives the plan: its presence is a trace of earlier grants. */
  readonly fence: string;
  /** The last epoch stored. Outlives the plan, so epochs keep growing across deletions. */
  readonly epoch: string;
  /** A hash of holder records: holderId → `since|expiresAt|json` (server ms). */
  readonly holders: string;
  /** The prefix of partition keys; partition `n` is `${partitionBase}${n}`. */
  readonly partitionBase: string;
}

/** The keys of `resource` under `keyPrefix`. */
export function resourceKeys(keyPrefix: string, resource: string): ResourceKeys {
  const base = `${keyPrefix}{${resource}}`;
  return {
    plan: `${base}:plan`,
    server: `${base}:server`,
    grace: `${base}:grace`,
    fence: `${base}:fence`,
    epoch: `${base}:epoch`,
    holders: `${base}:holders`,
    partitionBase: `${base}:p:`,
  };
}

/**
 * A partition key holds `token|fence|epoch|holderId`. The token is a fixed-length UUID and comes
 * first, so scripts compare the prefix `token|` and a holderId containing `|` cannot confuse them.
 */
export interface StoredGrant {
  readonly token: string;
  readonly fencingToken: number | null;
  readonly epoch: number | null;
  readonly holderId: string;
}

/** Parses a partition key's value; null when it is not in the expected form. */
export function parseGrant(value: string): StoredGrant | null {
  const parts = value.split("|");
  if (parts.length < 4) return null;
  const [token, fence, epoch] = parts as [string, string, string];
  const holderId = parts.slice(3).join("|");
  return {
    token,
    fencingToken: /^\d+$/.test(fence) && Number.isSafeInteger(Number(fence)) ? Number(fence) : null,
    epoch: /^\d+$/.test(epoch) ? Number(epoch) : null,
    holderId,
  };
}

// Shared Lua. `touch` notices a server that is not the one that last touched the resource (a
// restart from an RDB/AOF file, a promoted replica): if the plan survived, leases may have been
// forgotten or carry old expiries, so nothing is granted for the stored text's `restoreGraceMs`,
// and the fence counter jumps past any token the forgotten state may have issued. Only a resource
// with a plan is marked, so a call on an unknown resource leaves no trace; the scripts that store
// a plan move the fence the same way when they find another server's mark (a tombstone restored
// from a snapshot: grants made after the snapshot under a plan stored again were forgotten).
const PRELUDE = `
local function plan_of(text)
  if not text then return nil end
  local ok, v = pcall(cjson.decode, text)
  if ok and type(v) == 'table' and type(v.epoch) == 'number' and type(v.plan) == 'table'
    and type(v.plan.partitions) == 'number' and type(v.plan.leaseTtlMs) == 'number'
    and type(v.restoreGraceMs) == 'number' then return v end
  return nil
end
local function server_id()
  return string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function extend_grace(key, ms)
  if ms <= 0 then return end
  if redis.call('PTTL', key) < ms then redis.call('SET', key, '1', 'PX', ms) end
end
local function grace_left(key)
  local left = redis.call('PTTL', key)
  if left > 0 then return left end
  return 0
end
-- Moves the fence counter to the server's clock in µs unless it is already past it.
local function bump_fence(fence_key)
  local fence = tonumber(redis.call('GET', fence_key) or '0')
  local floor = now_us()
  if fence < floor then redis.call('SET', fence_key, string.format('%.0f', floor)) end
end
local function touch(plan_key, server_key, grace_key, fence_key)
  local text = redis.call('GET', plan_key)
  if not text then return nil, nil end
  local plan = plan_of(text)
  local id = server_id()
  if redis.call('GET', server_key) ~= id then
    redis.call('SET', server_key, id)
    if plan then extend_grace(grace_key, plan.restoreGraceMs) end
    bump_fence(fence_key)
  end
  return text, plan
end
-- Marks the resource as this server's when a script stores a plan (see touch).
local function mark_server(server_key, fence_key)
  local id = server_id()
  if redis.call('GET', server_key) ~= id then
    bump_fence(fence_key)
    redis.call('SET', server_key, id)
  end
end
`;

/**
 * ensurePlan. KEYS: plan, server, grace, fence, epoch. ARGV: the stored text after its epoch
 * (`storedPlanBody`), creation graceMs, partitions, partition key base. Returns {1, stored} when it stored the plan, {0, stored} when
 * one was there. The grace is skipped when the server proves nothing it granted can still be in
 * use: no trace of the resource (no epoch, fence, grace or partition key), a primary never
 * promoted since it started (a promoted replica may lack writes), up longer than the grace.
 */
const ENSURE_PLAN = `${PRELUDE}
local existing = touch(KEYS[1], KEYS[2], KEYS[3], KEYS[4])
if existing then return {0, existing} end
local grace = tonumber(ARGV[2])
if grace > 0 then
  local traced = redis.call('EXISTS', KEYS[3], KEYS[4], KEYS[5]) > 0
  local n = tonumber(ARGV[3])
  if not traced then
    for p = 0, n - 1 do
      if redis.call('EXISTS', ARGV[4] .. p) == 1 then traced = true break end
    end
  end
  local uptime = tonumber(string.match(redis.call('INFO', 'server'), 'uptime_in_seconds:(%d+)'))
  local rep = redis.call('INFO', 'replication')
  local primary = string.match(rep, 'role:(%a+)') == 'master'
  local promoted = string.match(rep, 'second_repl_offset:(%-?%d+)') ~= '-1'
  if not traced and primary and not promoted and (uptime - 1) * 1000 > grace then grace = 0 end
end
local epoch = tonumber(redis.call('GET', KEYS[5]) or '0') + 1
local text = '{"epoch":' .. string.format('%d', epoch) .. ARGV[1]
redis.call('SET', KEYS[1], text)
mark_server(KEYS[2], KEYS[4])
redis.call('SET', KEYS[5], string.format('%d', epoch))
extend_grace(KEYS[3], grace)
if redis.call('EXISTS', KEYS[4]) == 0 then redis.call('SET', KEYS[4], string.format('%.0f', now_us())) end
return {1, text}
`;

/**
 * replacePlan. KEYS: plan, server, grace, fence, epoch. ARGV: the stored text expected ('' for
 * none), the new plan's text after its epoch (`storedPlanBody`), graceMs, and the epoch to store ('' for the next one; Redlock brings
 * a server that disagrees with the majority to the majority's exact epoch). Returns {1, stored}
 * or {0, current} when the stored plan is not the expected one (compare and set).
 */
const REPLACE_PLAN = `${PRELUDE}
local current = touch(KEYS[1], KEYS[2], KEYS[3], KEYS[4]) or ''
if current ~= ARGV[1] then return {0, current} end
local epoch = tonumber(redis.call('GET', KEYS[5]) or '0') + 1
if ARGV[4] and ARGV[4] ~= '' then epoch = tonumber(ARGV[4]) end
local text = '{"epoch":' .. string.format('%d', epoch) .. ARGV[2]
redis.call('SET', KEYS[1], text)
mark_server(KEYS[2], KEYS[4])
redis.call('SET', KEYS[5], string.format('%d', epoch))
extend_grace(KEYS[3], tonumber(ARGV[3]))
if redis.call('EXISTS', KEYS[4]) == 0 then redis.call('SET', KEYS[4], string.format('%.0f', now_us())) end
return {1, text}
`;

/**
 * deletePlan. KEYS: plan, server, grace, fence, epoch. ARGV: the stored text expected, graceMs.
 * Returns {1} when deleted, {0, current} otherwise. The epoch and fence keys stay as a tombstone.
 */
const DELETE_PLAN = `${PRELUDE}
local current = touch(KEYS[1], KEYS[2], KEYS[3], KEYS[4]) or ''
if current == '' or current ~= ARGV[1] then return {0, current} end
redis.call('DEL', KEYS[1])
extend_grace(KEYS[3], tonumber(ARGV[2]))
return {1}
`;

/**
 * tryAcquire. KEYS: plan, server, grace, fence, then one partition key per candidate. ARGV:
 * token, holderId, the stored plan text the caller runs under, then the candidates' indexes.
 * Takes the first free candidate for the plan's TTL. Returns {-1} without a plan, {-3} for an
 * unreadable one, {-4, epoch} for another plan, {-2, msLeft} during grace, {0} when all are
 * taken, {1, partition, fence}.
 */
const ACQUIRE = `${PRELUDE}
local text, plan = touch(KEYS[1], KEYS[2], KEYS[3], KEYS[4])
if not text then return {-1} end
if not plan then return {-3} end
if text ~= ARGV[3] then return {-4, plan.epoch} end
local left = grace_left(KEYS[3])
if left > 0 then return {-2, left} end
local n = plan.plan.partitions
local ttl = plan.plan.leaseTtlMs
for i = 5, #KEYS do
  -- KEYS[5..] are the candidates' keys, ARGV[4..] their indexes.
  local p = tonumber(ARGV[i - 1])
  if p and p >= 0 and p < n and p == math.floor(p) and redis.call('EXISTS', KEYS[i]) == 0 then
    local fence = redis.call('INCR', KEYS[4])
    -- Lua's .. would print a large number as 1.79e+15; %.0f is exact below 2^53.
    redis.call('SET', KEYS[i], ARGV[1] .. '|' .. string.format('%.0f', fence) .. '|' .. string.format('%d', plan.epoch) .. '|' .. ARGV[2], 'PX', ttl)
    return {1, p, fence}
  end
end
return {0}
`;

/**
 * heartbeat. KEYS: plan, server, grace, fence, holders, then one partition key per lease. ARGV:
 * the stored plan text the caller runs under, holderId, record JSON, then one `token|` per lease. When the stored plan is exactly the caller's, renews each lease still held by its
 * token and publishes the holder's record, both for the plan's TTL; drops expired records and
 * returns {epoch or -1, graceLeft, {renewed 0/1 …}, {holderId, since, msLeft, json, …}, same 0/1}.
 */
const HEARTBEAT = `${PRELUDE}
local text, plan = touch(KEYS[1], KEYS[2], KEYS[3], KEYS[4])
local renewed = {}
local leases = #KEYS - 5
local epoch = -1
if plan then epoch = plan.epoch end
local live = plan and text == ARGV[1]
local ttl = 0
if live then ttl = plan.plan.leaseTtlMs end
for i = 1, leases do
  local ok = 0
  if live then
    local v = redis.call('GET', KEYS[5 + i])
    local prefix = ARGV[3 + i]
    if v and string.sub(v, 1, #prefix) == prefix then
      redis.call('PEXPIRE', KEYS[5 + i], ttl)
      ok = 1
    end
  end
  renewed[i] = ok
end
local now = now_ms()
if live then
  local previous = redis.call('HGET', KEYS[5], ARGV[2])
  local since = now
  if previous then
    local s, e = string.match(previous, '^(%d+)|(%d+)|')
    if s and tonumber(e) > now then since = tonumber(s) end
  end
  redis.call('HSET', KEYS[5], ARGV[2], string.format('%.0f', since) .. '|' .. string.format('%.0f', now + ttl) .. '|' .. ARGV[3])
  redis.call('PEXPIRE', KEYS[5], ttl * 2)
end
local records = {}
if text then
  local all = redis.call('HGETALL', KEYS[5])
  for i = 1, #all, 2 do
    local s, e, json = string.match(all[i + 1], '^(%d+)|(%d+)|(.*)$')
    if s and tonumber(e) > now then
      records[#records + 1] = all[i]
      records[#records + 1] = s
      records[#records + 1] = tonumber(e) - now
      records[#records + 1] = json
    else
      redis.call('HDEL', KEYS[5], all[i])
    end
  end
end
local same = 0
if live then same = 1 end
return {epoch, grace_left(KEYS[3]), renewed, records, same}
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
 * inspect. KEYS: plan, grace, holders. ARGV: partition key base. Returns {plan or nil, graceLeft,
 * {holderId, since, msLeft, json, …}, value0, pttl0, value1, pttl1, …} with '' and -2 for a free
 * partition. The partition keys are derived rather than declared: their count is only known from
 * the plan. They share the plan key's hash tag, so in a Cluster they are in the same slot.
 */
const INSPECT = `${PRELUDE}
local text = redis.call('GET', KEYS[1])
local now = now_ms()
local records = {}
local all = redis.call('HGETALL', KEYS[3])
for i = 1, #all, 2 do
  local s, e, json = string.match(all[i + 1], '^(%d+)|(%d+)|(.*)$')
  if s and tonumber(e) > now then
    records[#records + 1] = all[i]
    records[#records + 1] = s
    records[#records + 1] = tonumber(e) - now
    records[#records + 1] = json
  end
end
-- false (a nil reply) when there is no plan key: an empty one is an unreadable plan, as for GET.
local out = {text or false, grace_left(KEYS[2]), records}
local plan = plan_of(text)
if not plan then return out end
local n = plan.plan.partitions
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
  replacePlan: new LuaScript(REPLACE_PLAN),
  deletePlan: new LuaScript(DELETE_PLAN),
  acquire: new LuaScript(ACQUIRE),
  heartbeat: new LuaScript(HEARTBEAT),
  release: new LuaScript(RELEASE),
  inspect: new LuaScript(INSPECT),
} as const;

/** What the acquire script answered. */
export type AcquireReply =
  | { kind: "missing" }
  | { kind: "unreadable" }
  | { kind: "epoch"; epoch: number }
  | { kind: "grace"; remainingMs: number }
  | { kind: "taken" }
  | { kind: "granted"; partition: number; fencingToken: number };

/** Decodes the acquire script's reply; throws on anything unexpected. */
export function parseAcquireReply(reply: unknown): AcquireReply {
  const r = asArray(reply, "acquire");
  const code = r[0];
  if (code === -1) return { kind: "missing" };
  if (code === -3) return { kind: "unreadable" };
  if (code === -4 && typeof r[1] === "number") return { kind: "epoch", epoch: r[1] };
  if (code === -2 && typeof r[1] === "number") return { kind: "grace", remainingMs: r[1] };
  if (code === 0) return { kind: "taken" };
  if (code === 1 && typeof r[1] === "number" && typeof r[2] === "number") return { kind: "granted", partition: r[1], fencingToken: r[2] };
  throw new Error(`unexpected acquire reply ${JSON.stringify(reply)}`);
}

/** What a plan-writing script answered: done (with the stored text), or not (with the current one). */
export interface PlanWriteReply {
  readonly done: boolean;
  /** The stored text after the call ('' when none). */
  readonly text: string;
}

/** Decodes the ensurePlan, replacePlan and deletePlan scripts' replies. */
export function parsePlanWriteReply(reply: unknown, what: string): PlanWriteReply {
  const r = asArray(reply, what);
  if (r[0] === 1) return { done: true, text: typeof r[1] === "string" ? r[1] : "" };
  if (r[0] === 0) return { done: false, text: typeof r[1] === "string" ? r[1] : "" };
  throw new Error(`unexpected ${what} reply ${JSON.stringify(reply)}`);
}

/** One holder record as a script returned it. */
export interface RawRecord {
  readonly holderId: string;
  readonly since: number;
  readonly msLeft: number;
  readonly json: string;
}

/** What the heartbeat script answered. */
export interface HeartbeatReply {
  /** The stored epoch, null without a readable plan. */
  readonly epoch: number | null;
  /** Whether the stored plan is exactly the caller's. */
  readonly samePlan: boolean;
  readonly graceMs: number;
  readonly renewed: boolean[];
  readonly records: RawRecord[];
}

/** Decodes the heartbeat script's reply; throws on anything unexpected. */
export function parseHeartbeatReply(reply: unknown): HeartbeatReply {
  const r = asArray(reply, "heartbeat");
  const [epoch, grace, renewed, records, same] = r;
  if (typeof epoch !== "number" || typeof grace !== "number" || !Array.isArray(renewed) || !Array.isArray(records)) {
    throw new Error(`unexpected heartbeat reply ${JSON.stringify(reply)}`);
  }
  return { epoch: epoch < 0 ? null : epoch, samePlan: same === 1, graceMs: grace, renewed: renewed.map((x) => x === 1), records: parseRecords(records) };
}

/** One partition as the inspect script saw it. */
export interface InspectedPartition {
  readonly grant: StoredGrant | null;
  /** PTTL in ms; null when free. */
  readonly pttlMs: number | null;
}

/** What the inspect script answered. */
export interface InspectReply {
  /** The stored text, null when none. */
  readonly text: string | null;
  readonly graceMs: number;
  readonly records: RawRecord[];
  readonly partitions: InspectedPartition[];
}

/** Decodes the inspect script's reply; throws on anything unexpected. */
export function parseInspectReply(reply: unknown): InspectReply {
  const r = asArray(reply, "inspect");
  const [text, grace, records, ...rest] = r;
  if ((typeof text !== "string" && text !== null) || typeof grace !== "number" || !Array.isArray(records)) {
    throw new Error(`unexpected inspect reply ${JSON.stringify(reply)}`);
  }
  const partitions: InspectedPartition[] = [];
  for (let i = 0; i + 1 < rest.length; i += 2) {
    const value = rest[i];
    const pttl = rest[i + 1];
    const grant = typeof value === "string" && value !== "" ? parseGrant(value) : null;
    partitions.push({ grant, pttlMs: grant && typeof pttl === "number" && pttl >= 0 ? pttl : null });
  }
  return { text, graceMs: grace, records: parseRecords(records), partitions };
}

function parseRecords(flat: readonly unknown[]): RawRecord[] {
  const out: RawRecord[] = [];
  for (let i = 0; i + 3 < flat.length; i += 4) {
    const [holderId, since, msLeft, json] = flat.slice(i, i + 4);
    if (typeof holderId !== "string" || typeof json !== "string") continue;
    out.push({ holderId, since: Number(since), msLeft: Number(msLeft), json });
  }
  return out;
}

function asArray(reply: unknown, what: string): unknown[] {
  if (!Array.isArray(reply)) throw new Error(`unexpected ${what} reply ${JSON.stringify(reply)}`);
  return reply;
}

/** The script argument that identifies a grant: its token and the separator. */
export function tokenPrefix(token: string): string {
  return `${token}|`;
}
