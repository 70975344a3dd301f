import { execFile } from "node:child_process";

interface RunFigures {
  requestsSent: number;
  rejected429: number;
  recordsWritten: number;
  duplicateWrites: number;
  timeToFinishS: number;
  idealS: number;
  audit: { overLimitWindows: number; worstWindowRatio: number };
}

// Azurite start, lease warm-up, about 5 s limited and 5-10 s naive.
jest.setTimeout(120_000);

// The pattern's published figures for its first example (10,000 records x 10 RU at 20,000 RU/s):
// naive 30,000 sends and 20,000 errors in five passes, rate-limited 10,000 sends and none.
const PUBLISHED_NAIVE = { sent: 30_000, rejected: 20_000 };

test("npm run demo -- --scenario cosmos --json: the seed's first example, limited vs naive, beside the published figures", async () => {
  const { code, stdout, stderr } = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, ["--import", "tsx", "demo/run.ts", "--scenario", "cosmos", "--json"], { timeout: 110_000, maxBuffer: 10_000_000 }, (error, out, err) =>
      resolve({ code: error ? (typeof error.code === "number" ? error.code : -1) : 0, stdout: out, stderr: err }),
    );
  });
  expect({ code, stderr: code === 0 ? "" : stderr }).toEqual({ code: 0, stderr: "" });
  const summary = JSON.parse(stdout) as {
    ok: boolean; limited: RunFigures; naive: RunFigures; chart: string;
    naivePasses: Array<{ sent: number; rejected: number; arrivalSpanMs: number }>;
    published: { naive: { sent: number; rejected: number }; limited: { sent: number; rejected: number } };
  };
  expect(summary.ok).toBe(true);
  // Rate-limited: exactly one request per record, none rejected, arrivals within the quota.
  expect(summary.limited).toMatchObject({ requestsSent: 10_000, rejected429: 0, recordsWritten: 10_000, duplicateWrites: 0, idealS: 5 });
  expect(summary.limited.audit.overLimitWindows).toBe(0);
  expect(summary.limited.audit.worstWindowRatio).toBeLessThanOrEqual(1);
  // Ideal 5 s at the full quota; the demo paces with jitterMs 100 (windows of 1.1 s: 5.5 s), and
  // one sending process on a shared machine loses a little more to its own event loop.
  expect(summary.limited.timeToFinishS).toBeGreaterThanOrEqual(5 * 0.95);
  expect(summary.limited.timeToFinishS).toBeLessThanOrEqual(5 * 1.1 + 0.75);
  // Naive: the same records, but about three sends per record, the pattern's figures within 15%.
  expect(summary.naive.recordsWritten).toBe(10_000);
  expect(summary.naive.requestsSent).toBe(10_000 + summary.naive.rejected429);
  expect(Math.abs(summary.naive.requestsSent - PUBLISHED_NAIVE.sent) / PUBLISHED_NAIVE.sent).toBeLessThanOrEqual(0.15);
  expect(Math.abs(summary.naive.rejected429 - PUBLISHED_NAIVE.rejected) / PUBLISHED_NAIVE.rejected).toBeLessThanOrEqual(0.15);
  // Pass by pass: everything at first, then exactly the rejected, until none is.
  const passes = summary.naivePasses;
  expect(passes[0]!.sent).toBe(10_000);
  for (let i = 1; i < passes.length; i++) expect(passes[i]!.sent).toBe(passes[i - 1]!.rejected);
  expect(passes[passes.length - 1]!.rejected).toBe(0);
  expect(passes.reduce((a, p) => a + p.sent, 0)).toBe(summary.naive.requestsSent);
  expect(summary.published).toMatchObject({ naive: PUBLISHED_NAIVE, limited: { sent: 10_000, rejected: 0 } });
  expect(summary.chart).toMatch(/demo-output\/cosmos-azure\.svg$/);
});
