import { createServer, type IncomingMessage, type Server } from "node:http";

/** One request as the database saw it. */
export interface Arrival {
  /** When it arrived, ms on this process's monotonic clock. */
  readonly t: number;
  readonly units: number;
  /** The `x-processor` header: who sent it. */
  readonly processor: string;
  readonly accepted: boolean;
}

/** What `GET /state` answers: progress figures for the terminal. */
export interface DatabaseState {
  readonly written: { distinct: number; duplicates: number; byType: Record<string, number> };
  /** Accepted units per processor in the last second. */
  readonly unitsLastSecond: Record<string, number>;
  /** 429s per processor since the last reset. */
  readonly rejected: Record<string, number>;
}

/** A throttled "database" for the demo: at most `limit` units in any sliding window of `intervalMs`. */
export interface DemoDatabase {
  /** `http://127.0.0.1:PORT`. */
  readonly url: string;
  /** Every request since the last reset, in arrival order. */
  readonly arrivals: readonly Arrival[];
  /** Distinct record ids written since the last reset, and how many writes repeated one. */
  written(): { distinct: number; duplicates: number; byType: Record<string, number> };
  /** Forgets arrivals, writes and the window (between the limited and the naive run). */
  reset(): void;
  close(): Promise<void>;
}

/**
 * startDatabase starts the demo's database: `POST /write` with JSON `{ "id": "A-17", "type": "A" }`
 * and headers `x-processor` (who sends) and `x-cost` (units, default 1). It accepts a write while
 * the units accepted in the window `(now - intervalMs, now]` plus this one stay within `limit`,
 * else answers 429 with `Retry-After` (whole seconds until enough units leave the window), as
 * Cosmos DB and most throttled APIs do. The window is exact (every accepted arrival kept), so the
 * database itself is the reference the audit checks against.
 *
 * `POST /bulk` with JSON `{ "records": [...] }` (and `x-cost` per record) is Cosmos DB's bulk
 * mode: every record is one write arriving when the request has been read, accepted or refused on its own
 * in order; the answer is `{ "statuses": [201 | 429, ...] }`, with `Retry-After` when any was
 * refused. Control routes for the demo: `GET /state` ({@link DatabaseState}), `GET /arrivals`
 * (every {@link Arrival}), `POST /reset`.
 */
export async function startDatabase(options: { limit: number; intervalMs: number }): Promise<DemoDatabase> {
  const { limit, intervalMs } = options;
  let arrivals: Arrival[] = [];
  // Accepted arrivals still inside the window: a queue of [t, units] with a running sum.
  let window: [number, number][] = [];
  let head = 0;
  let inWindow = 0;
  let ids = new Map<string, number>();
  let byType: Record<string, number> = {};
  let duplicates = 0;

  const readBody = (req: IncomingMessage): Promise<string> =>
    new Promise((resolve, reject) => {
      let text = "";
      req.setEncoding("utf8");
      req.on("data", (chunk: string) => (text += chunk));
      req.on("end", () => resolve(text));
      req.on("error", reject);
    });

  const reset = () => {
    arrivals = [];
    window = [];
    head = 0;
    inWindow = 0;
    ids = new Map();
    byType = {};
    duplicates = 0;
  };
  const state = (now: number): DatabaseState => {
    const recent: Record<string, number> = {};
    const rejected: Record<string, number> = {};
    for (let i = arrivals.length - 1; i >= 0 && arrivals[i]!.t > now - 1000; i--) {
      const a = arrivals[i]!;
      if (a.accepted) recent[a.processor] = (recent[a.processor] ?? 0) + a.units;
    }
    for (const a of arrivals) if (!a.accepted) rejected[a.processor] = (rejected[a.processor] ?? 0) + 1;
    return { written: { distinct: ids.size, duplicates, byType: { ...byType } }, unitsLastSecond: recent, rejected };
  };

  /**
   * Records one write of `units` arriving at `t`; accepts it (null) or refuses it and returns the
   * whole seconds, rounded up, until enough units leave the window for it.
   */
  const admit = (t: number, units: number, processor: string): number | null => {
    while (head < window.length && window[head]![0] <= t - intervalMs) inWindow -= window[head++]![1];
    if (head > 4096) {
      window = window.slice(head);
      head = 0;
    }
    const accepted = inWindow + units <= limit + 1e-9;
    arrivals.push({ t, units, processor, accepted });
    if (accepted) {
      window.push([t, units]);
      inWindow += units;
      return null;
    }
    // Enough leaves the window when the oldest entries age out.
    let freed = 0;
    let until = t;
    for (let i = head; i < window.length && inWindow - freed + units > limit; i++) {
      freed += window[i]![1];
      until = window[i]![0] + intervalMs;
    }
    return Math.max(1, Math.ceil((until - t) / 1000));
  };
  const store = (record: { id: string; type: string }) => {
    const seen = ids.get(record.id) ?? 0;
    ids.set(record.id, seen + 1);
    if (seen > 0) duplicates++;
    else byType[record.type] = (byType[record.type] ?? 0) + 1;
  };

  const server: Server = createServer((req, res) => {
    // Time of arrival: taken before the body is read, as a server would meter the request.
    const t = performance.now();
    if (req.method === "GET" && req.url === "/arrivals") {
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(arrivals));
      return;
    }
    if (req.method === "GET" && req.url === "/state") {
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(state(t)));
      return;
    }
    if (req.method === "POST" && req.url === "/reset") {
      reset();
      res.writeHead(204).end();
      return;
    }
    const units = Number(req.headers["x-cost"] ?? 1);
    const processor = String(req.headers["x-processor"] ?? "?");
    if (req.method === "POST" && req.url === "/bulk") {
      readBody(req)
        .then((text) => {
          const { records } = JSON.parse(text) as { records: { id: string; type: string }[] };
          // Metered once the whole request is in (its records are in it), so the window's times never go back.
          const at = performance.now();
          let retryAfterS = 0;
          const statuses = records.map((record) => {
            const refusedForS = admit(at, units, processor);
            if (refusedForS !== null) {
              retryAfterS = Math.max(retryAfterS, refusedForS);
              return 429;
            }
            store(record);
            return 201;
          });
          res.writeHead(200, { "content-type": "application/json", ...(retryAfterS > 0 ? { "retry-after": String(retryAfterS) } : {}) });
          res.end(JSON.stringify({ statuses }));
        })
        .catch(() => res.writeHead(400).end());
      return;
    }
    if (req.method !== "POST" || req.url !== "/write") {
      res.writeHead(404).end();
      return;
    }
    const refusedForS = admit(t, units, processor);
    if (refusedForS !== null) {
      res.writeHead(429, { "retry-after": String(refusedForS) }).end();
      req.resume();
      return;
    }
    readBody(req)
      .then((text) => {
        store(JSON.parse(text) as { id: string; type: string });
        res.writeHead(201).end();
      })
      .catch(() => res.writeHead(400).end());
  });
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  return {
    url: `http://127.0.0.1:${port}`,
    get arrivals() {
      return arrivals;
    },
    written: () => ({ distinct: ids.size, duplicates, byType: { ...byType } }),
    reset,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
