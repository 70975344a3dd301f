import { performance } from "node:perf_hooks";
import { AdaptiveRateController } from "../../src/flow/adaptive-rate-controller.js";
import { createRetryingFetch } from "../../src/flow/retrying-fetch.js";
import { readyMemoryLimiter } from "../support/flow-limiter.js";
import { startHttpServer } from "../support/http-server.js";

// A server whose quota (sliding window of 1 s) is half the limiter's: AIMD must find it, then
// recover when the quota is raised. About 16 s of real time.
test("AIMD converges under a lower server quota (429s < 5%) and recovers when the quota rises", async () => {
  let quota = 50;
  const accepted: number[] = [];
  const log: Array<{ t: number; ok: boolean }> = [];
  const server = await startHttpServer((_req, res) => {
    const now = performance.now();
    while (accepted.length > 0 && accepted[0]! <= now - 1000) accepted.shift();
    const ok = accepted.length < quota;
    if (ok) accepted.push(now);
    log.push({ t: now, ok });
    res.writeHead(ok ? 200 : 429);
    res.end();
  });
  const { limiter } = await readyMemoryLimiter({ resource: "adaptive", limit: 100, intervalMs: 1000, partitions: 4 });
  const controller = new AdaptiveRateController({ limiter, intervalMs: 500, decreaseFactor: 0.7, increaseStep: 0.05, minFactor: 0.05 });
  const fetchRetrying = createRetryingFetch({ limiter, maxAttempts: 3, baseDelayMs: 50, maxDelayMs: 200 });
  let running = true;
  const workers = Array.from({ length: 16 }, async () => {
    while (running) {
      const response = await fetchRetrying(server.url);
      await response.arrayBuffer();
    }
  });
  const factors: number[] = [];
  const sample = setInterval(() => factors.push(controller.factor), 250);
  try {
    const start = performance.now();
    await new Promise((r) => setTimeout(r, 9000));
    const measuredFrom = start + 4000; // after convergence
    const phase1 = log.filter((e) => e.t >= measuredFrom);
    const rejected1 = phase1.filter((e) => !e.ok).length;
    const rate1 = phase1.filter((e) => e.ok).length / ((performance.now() - measuredFrom) / 1000);
    console.log(`quota 50/s: ${phase1.length} requests, ${rejected1} 429s (${((100 * rejected1) / phase1.length).toFixed(1)}%), ${rate1.toFixed(1)} ok/s, factors ${factors.map((f) => f.toFixed(2)).join(" ")}`);
    expect(controller.stats().decreases).toBeGreaterThan(0);
    expect(rejected1 / phase1.length).toBeLessThan(0.05);
    expect(rate1).toBeGreaterThan(25); // not collapsed to the floor either

    quota = 1000;
    const raisedAt = performance.now();
    // +0.05 per 500 ms: from the lowest plausible factor (~0.3) that is 7 s; bounded at 10 s.
    while (controller.factor < 1 && performance.now() - raisedAt < 10_000) await new Promise((r) => setTimeout(r, 100));
    const recoveredInMs = performance.now() - raisedAt;
    await new Promise((r) => setTimeout(r, 1100));
    const lastSecond = log.filter((e) => e.t >= performance.now() - 1000);
    console.log(`quota raised: factor ${controller.factor.toFixed(2)} after ${Math.round(recoveredInMs)} ms, last second ${lastSecond.length} requests; factors ${factors.map((f) => f.toFixed(2)).join(" ")}`);
    expect(log.filter((e) => e.t >= raisedAt && !e.ok).length).toBe(0);
    expect(controller.factor).toBe(1);
    expect(lastSecond.length).toBeGreaterThanOrEqual(85);
    expect(lastSecond.length).toBeLessThanOrEqual(100);
  } finally {
    running = false;
    clearInterval(sample);
    await Promise.all(workers);
    controller.close();
    await limiter.close();
    await server.close();
  }
});

test("a controller's pending recovery timer does not keep the process alive", async () => {
  const { execFile } = await import("node:child_process");
  const { join } = await import("node:path");
  const root = join(__dirname, "..", "..");
  const start = performance.now();
  const stdout = await new Promise<string>((resolve, reject) => {
    execFile(process.execPath, ["--import", "tsx", join(root, "test/integration/fixtures/controller-exit-child.ts")], { cwd: root, timeout: 20_000 },
      (error, out, err) => (error ? reject(new Error(`child did not exit cleanly: ${error.message}\n${err}`)) : resolve(out)));
  });
  expect(stdout).toContain("factor 0.7");
  expect(performance.now() - start).toBeLessThan(15_000); // the timer is 60 s
});
