import { execFile } from "node:child_process";
import { performance } from "node:perf_hooks";
import { join } from "node:path";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createPacingTransform } from "../../src/flow/pacing-transform.js";
import { pace } from "../../src/flow/pace.js";
import { auditSlidingWindows } from "../support/audit.js";
import { readyMemoryLimiter } from "../support/flow-limiter.js";

const ROOT = join(__dirname, "..", "..");

interface ChildReport {
  times: number[];
  heap: [number, number];
  pulled: number;
  yielded: number;
  maxReadAhead: number;
  limit: number;
}

// 10 s in a child process (--expose-gc for exact heap figures).
test("pace() over an endless generator for 10 s: bounded heap, read-ahead of one, rate within the limit", async () => {
  const output = await new Promise<string>((resolve, reject) => {
    execFile(process.execPath, ["--expose-gc", "--import", "tsx", join(ROOT, "test/integration/fixtures/pace-child.ts"), "10000"],
      { cwd: ROOT, timeout: 40_000, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => (error ? reject(new Error(`pace child failed: ${error.message}\n${stderr}`)) : resolve(stdout)));
  });
  const report = JSON.parse(output) as ChildReport;
  const growthMb = (report.heap[1] - report.heap[0]) / 2 ** 20;
  const audit = auditSlidingWindows(report.times.map((t) => ({ t, units: 1 })), report.limit, 1000);
  const spanS = (report.times.at(-1)! - report.times[0]!) / 1000;
  console.log(`pace: ${report.yielded} items in ${spanS.toFixed(2)} s (${(report.yielded / spanS).toFixed(1)}/s, limit ${report.limit}/s), worst window ${audit.worstRatio.toFixed(3)} of the limit, heap growth ${growthMb.toFixed(2)} MB, read-ahead ${report.maxReadAhead}`);
  expect(growthMb).toBeLessThan(5);
  expect(report.maxReadAhead).toBe(1);
  expect(report.pulled).toBe(report.yielded);
  expect(audit.overLimitWindows).toBe(0);
  expect(report.yielded).toBeGreaterThan(report.limit * 9); // paced, not starved
});

test("pace() stops at an abort with the signal's reason and closes the source", async () => {
  const { limiter } = await readyMemoryLimiter({ resource: "pace-abort", limit: 20, intervalMs: 1000, partitions: 1 });
  let closed = false;
  async function* source() {
    try {
      for (let i = 0; ; i++) yield i;
    } finally {
      closed = true;
    }
  }
  const controller = new AbortController();
  const reason = new Error("stop");
  const seen: number[] = [];
  setTimeout(() => controller.abort(reason), 300);
  await expect((async () => {
    for await (const n of pace(source(), { limiter, signal: controller.signal })) seen.push(n);
  })()).rejects.toBe(reason);
  expect(closed).toBe(true);
  expect(seen.length).toBeGreaterThan(0);
  expect(seen.length).toBeLessThanOrEqual(20);
  await limiter.close();
});

test("createPacingTransform in stream.pipeline passes chunks as admitted, weighted by cost", async () => {
  const { limiter } = await readyMemoryLimiter({ resource: "pace-transform", limit: 40, intervalMs: 1000, partitions: 2 });
  const arrivals: Array<{ t: number; units: number }> = [];
  const items = Array.from({ length: 30 }, (_, i) => ({ i, weight: (i % 3) + 1 }));
  const start = performance.now();
  await pipeline(
    Readable.from(items),
    createPacingTransform<{ i: number; weight: number }>({ limiter, cost: (item) => item.weight }),
    new Writable({
      objectMode: true,
      write(item: { weight: number }, _enc, cb) {
        arrivals.push({ t: performance.now(), units: item.weight });
        cb();
      },
    }),
  );
  const audit = auditSlidingWindows(arrivals, 40, 1000);
  expect(arrivals).toHaveLength(30);
  expect(audit.totalUnits).toBe(60);
  expect(audit.overLimitWindows).toBe(0);
  expect(performance.now() - start).toBeGreaterThan(500); // 60 units at 40/s cannot pass at once
  await limiter.close();
});
