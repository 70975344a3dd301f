import { Agent, request } from "node:http";

/** A record of the demo: an id unique across the run and its type (A or B). */
export interface DemoRecord {
  readonly id: string;
  readonly type: string;
}

/** The answer of one write. */
export interface WriteResult {
  readonly status: number;
  /** The Retry-After of a 429, in ms. */
  readonly retryAfterMs: number | null;
}

// Keep-alive sockets: a new TCP connection per write would add its own jitter to arrival times.
const agent = new Agent({ keepAlive: true, maxSockets: 512 });

/** Writes one record to the demo database as `processor`, costing `cost` units. */
export function writeRecord(dbUrl: string, record: DemoRecord, processor: string, cost = 1): Promise<WriteResult> {
  const body = JSON.stringify(record);
  return new Promise((resolve, reject) => {
    const req = request(
      `${dbUrl}/write`,
      {
        method: "POST",
        agent,
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body), "x-processor": processor, "x-cost": String(cost) },
      },
      (res) => {
        res.resume();
        const retryAfter = Number(res.headers["retry-after"]);
        res.on("end", () => resolve({ status: res.statusCode ?? 0, retryAfterMs: Number.isFinite(retryAfter) ? retryAfter * 1000 : null }));
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

/** Closes the shared keep-alive sockets so the process can exit. */
export function closeWriter(): void {
  agent.destroy();
}

/** The answer of one bulk request: a status per record (201 written, 429 refused). */
export interface BulkResult {
  readonly statuses: readonly number[];
  /** The Retry-After when any record was refused, in ms. */
  readonly retryAfterMs: number | null;
}

/**
 * Writes `records` in one bulk request (Cosmos DB's bulk mode), each costing `cost` units and
 * accepted or refused on its own.
 */
export function writeBulk(dbUrl: string, records: readonly DemoRecord[], processor: string, cost = 1): Promise<BulkResult> {
  const body = JSON.stringify({ records });
  return new Promise((resolve, reject) => {
    const req = request(
      `${dbUrl}/bulk`,
      {
        method: "POST",
        agent,
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body), "x-processor": processor, "x-cost": String(cost) },
      },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => (text += chunk));
        res.on("end", () => {
          if (res.statusCode !== 200) return reject(new Error(`bulk write answered HTTP ${res.statusCode}`));
          const retryAfter = Number(res.headers["retry-after"]);
          resolve({ statuses: (JSON.parse(text) as { statuses: number[] }).statuses, retryAfterMs: Number.isFinite(retryAfter) ? retryAfter * 1000 : null });
        });
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}
