import { performance } from "node:perf_hooks";
import { Redis } from "ioredis";

/** A markdown table: header cells and rows of cells. */
export interface Table {
  readonly title: string;
  readonly headers: readonly string[];
  readonly rows: readonly (readonly string[])[];
}

/** A target from issue #7 with the figure measured against it. */
export interface Target {
  readonly what: string;
  readonly goal: string;
  readonly measured: string;
  readonly met: boolean;
}

/** What one scenario reports: tables for people, raw data for `--json`. */
export interface ScenarioResult {
  readonly name: string;
  readonly title: string;
  readonly seconds: number;
  readonly tables: readonly Table[];
  readonly targets: readonly Target[];
  readonly notes: readonly string[];
  readonly data: unknown;
}

/** Settings shared by every scenario. */
export interface BenchContext {
  readonly quick: boolean;
  readonly redisUrl: string;
  readonly redisPort: number;
  /** Unique per run, so repeated runs against one Redis never share keys. */
  readonly runId: string;
  /** Progress lines go to stderr so stdout stays a clean table or JSON object. */
  log(message: string): void;
}

/** Client options every Redis user in the bench gets, as ioredis and rate-limiter-flexible recommend. */
export const REDIS_CLIENT_OPTIONS = {
  enableOfflineQueue: false,
  maxRetriesPerRequest: 1,
  commandTimeout: 2_000,
  connectTimeout: 2_000,
  lazyConnect: true,
} as const;

/** An ioredis client connected to `url` with {@link REDIS_CLIENT_OPTIONS}. */
export async function connectRedis(url: string): Promise<Redis> {
  const client = new Redis(url, REDIS_CLIENT_OPTIONS);
  await client.connect();
  return client;
}

/** Quits a client, or drops it when quitting fails (a dead server must not hang the bench). */
export async function quitRedis(client: Redis): Promise<void> {
  try {
    await client.quit();
  } catch {
    client.disconnect();
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `condition` every 5 ms until it holds; throws naming `what` after `timeoutMs`. */
export async function waitUntil(what: string, condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`bench: timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(5);
  }
}

/** The q-quantile (0..1) of an ascending array, nearest-rank; NaN when empty. */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank]!;
}

/** Formats a count per second with thousands separators. */
export function perSecond(n: number): string {
  return Math.round(n).toLocaleString("en-US");
}

/** Formats milliseconds: µs resolution below 1 ms, because that is where the target lives. */
export function ms(value: number): string {
  if (!Number.isFinite(value)) return "n/a";
  if (value < 1) return value.toFixed(4);
  if (value < 100) return value.toFixed(2);
  return value.toFixed(0);
}

/** Formats ours/peer as `12.3x` (or `0.05x`). */
export function ratio(ours: number, peer: number): string {
  if (!Number.isFinite(ours) || !Number.isFinite(peer) || peer === 0) return "n/a";
  const r = ours / peer;
  return r >= 10 ? `${r.toFixed(0)}x` : r >= 0.1 ? `${r.toFixed(2)}x` : `${r.toPrecision(2)}x`;
}

/** Formats a fraction as a percentage with `digits` decimals. */
export function pct(fraction: number, digits = 1): string {
  return Number.isFinite(fraction) ? `${(fraction * 100).toFixed(digits)}%` : "n/a";
}

/** Renders a table as GitHub markdown. */
export function markdownTable(table: Table): string {
  const line = (cells: readonly string[]) => `| ${cells.join(" | ")} |`;
  return [line(table.headers), line(table.headers.map(() => "---")), ...table.rows.map(line)].join("\n");
}
