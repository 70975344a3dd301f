import type { IncomingMessage, ServerResponse } from "node:http";
import { once } from "node:events";
import express, { type NextFunction, type Request, type Response } from "express";
import { loadShedding } from "../../src/flow/load-shedding.js";
import { createPacingTransform } from "../../src/flow/pacing-transform.js";
import { readyMemoryLimiter } from "../support/flow-limiter.js";
import { startHttpServer } from "../support/http-server.js";

// Issue #18, reproduction 8, on real time and a real HTTP server: a destroyed pacing transform
// withdraws its pending acquire (no units admitted for a chunk that is never passed on), an
// aborted signal destroys an idle transform, and load shedding passes handler errors on. About 3 s.

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test("a pacing transform destroyed while a chunk waits withdraws its acquire: nothing is admitted for it later", async () => {
  const { limiter } = await readyMemoryLimiter({ resource: `pacing-destroy`, limit: 10, intervalMs: 1000, partitions: 1 });
  const transform = createPacingTransform({ limiter });
  transform.on("error", () => undefined);
  transform.resume();
  // A Retry-After pause keeps the chunk waiting.
  limiter.pauseFor(600);
  transform.write({ n: 1 });
  await sleep(50);
  const queuedBefore = limiter.stats().queueLength;
  const admittedBefore = limiter.stats().admitted;
  transform.destroy();
  await sleep(20);
  const queuedAfter = limiter.stats().queueLength;
  await sleep(1000);
  const admittedLater = limiter.stats().admitted - admittedBefore;
  console.log(`#8 destroyed pacing transform: queue ${queuedBefore} before destroy, ${queuedAfter} after; admitted for it after the pause: ${admittedLater}`);
  await limiter.close();
  expect(queuedBefore).toBe(1);
  expect(queuedAfter).toBe(0);
  expect(admittedLater).toBe(0);
});

test("an aborted signal destroys an idle pacing transform with the signal's reason", async () => {
  const { limiter } = await readyMemoryLimiter({ resource: `pacing-abort`, limit: 10, intervalMs: 1000, partitions: 1 });
  const controller = new AbortController();
  const transform = createPacingTransform({ limiter, signal: controller.signal });
  const errors: unknown[] = [];
  transform.on("error", (e) => errors.push(e));
  const reason = new Error("shutting down");
  controller.abort(reason);
  await sleep(20);
  console.log(`#8 idle pacing transform after abort: destroyed ${transform.destroyed}, errors ${errors.map(String).join(", ")}`);
  await limiter.close();
  expect(transform.destroyed).toBe(true);
  expect(errors).toEqual([reason]);
});

test("loadShedding.wrap: a failing listener reaches onError; by default a 500 with a body and the error on stderr", async () => {
  const { limiter } = await readyMemoryLimiter({ resource: `shed-errors`, limit: 50, intervalMs: 1000, partitions: 1 });
  const failure = new Error("database down");
  const seen: unknown[] = [];
  const custom = await startHttpServer(loadShedding({ limiter, maxWaitMs: 200, onError: (error, _req, res) => {
    seen.push(error);
    res.statusCode = 502;
    res.end("custom");
  } }).wrap(async () => {
    throw failure;
  }));
  const logged: unknown[][] = [];
  const original = console.error;
  console.error = (...args: unknown[]) => void logged.push(args);
  const fallback = await startHttpServer(loadShedding({ limiter, maxWaitMs: 200 }).wrap((_req: IncomingMessage, _res: ServerResponse) => {
    throw failure;
  }));
  try {
    const a = await fetch(custom.url);
    const aBody = await a.text();
    const b = await fetch(fallback.url);
    const bBody = await b.text();
    console.error = original;
    console.log(`#8 wrap errors: onError got ${seen.map(String).join(", ")} and answered ${a.status} ${JSON.stringify(aBody)}; default answered ${b.status} ${JSON.stringify(bBody)} and logged ${logged.length} line(s)`);
    expect(seen).toEqual([failure]);
    expect([a.status, aBody]).toEqual([502, "custom"]);
    expect(b.status).toBe(500);
    expect(bBody).not.toBe("");
    expect(logged.some((args) => args.includes(failure))).toBe(true);
  } finally {
    console.error = original;
    await custom.close();
    await fallback.close();
    await limiter.close();
  }
});

test("Express: a throwing cost function and a failing route both reach the error middleware through next(err)", async () => {
  const { limiter } = await readyMemoryLimiter({ resource: `shed-express-errors`, limit: 50, intervalMs: 1000, partitions: 1 });
  const seen: string[] = [];
  const app = express();
  app.use(loadShedding({ limiter, maxWaitMs: 200, cost: (req) => {
    if (req.url === "/bad-cost") throw new Error("no cost");
    return 1;
  } }));
  app.get("/fails", async () => {
    throw new Error("route failed");
  });
  app.use((error: Error, _req: Request, res: Response, _next: NextFunction) => {
    seen.push(error.message);
    res.status(500).send(error.message);
  });
  const server = app.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as { port: number };
  try {
    const a = await fetch(`http://127.0.0.1:${port}/bad-cost`);
    const b = await fetch(`http://127.0.0.1:${port}/fails`);
    console.log(`#8 Express errors: ${a.status} ${await a.text()}, ${b.status} ${await b.text()}`);
    expect(seen).toEqual(["no cost", "route failed"]);
  } finally {
    server.closeAllConnections();
    server.close();
    await limiter.close();
  }
});
