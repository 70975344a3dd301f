import http from "node:http";
import type { AddressInfo } from "node:net";
import express from "express";
import { loadShedding, MemoryLeaseBackend, PartitionedRateLimiter } from "partitioned-rate-limiter";

const limiter = new PartitionedRateLimiter({
  resource: "public-api", limit: 20, intervalMs: 1000, partitions: 2, backend: new MemoryLeaseBackend(), leaseTtlMs: 2000,
});

const app = express();
app.use(loadShedding({ limiter, maxWaitMs: 500 }));                              // Express
app.get("/", (_req, res) => void res.send("hello from express"));

const handler: http.RequestListener = (_req, res) => void res.end("hello from node:http");
const plain = http.createServer(loadShedding({ limiter, maxWaitMs: 500 }).wrap(handler));      // node:http

const servers = [http.createServer(app), plain];
for (const server of servers) await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
// A request that would wait longer than maxWaitMs for admission is shed with 503 and a Retry-After.
for (const server of servers) {
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  let res = await fetch(url);
  while (res.status === 503) {
    await new Promise((resolve) => setTimeout(resolve, 1000 * Number(res.headers.get("retry-after"))));
    res = await fetch(url);
  }
  console.log(`${res.status}: ${await res.text()}`);
}

for (const server of servers) server.close();
await limiter.close();
