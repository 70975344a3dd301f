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
