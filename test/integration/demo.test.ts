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

test("npm run demo -- --scenario cosmos --json: the seed's first example, limited vs naive", async () => {
  const { code, stdout, stderr } = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, ["--import", "tsx", "demo/run.ts", "--scenario", "cosmos", "--json"], { timeout: 110_000, maxBuffer: 10_000_000 }, (error, out, err) =>
      resolve({ code: error ? (typeof error.code === "number" ? error.code : -1) : 0, stdout: out, stderr: err }),
    );
  });
  expect({ code, stderr: code === 0 ? "" : stderr }).toEqual({ code: 0, stderr: "" });
  const summary = JSON.parse(stdout) as { ok: boolean; limited: RunFigures; naive: RunFigures; chart: string };
  expect(summary.ok).toBe(true);
  // Rate-limited: exactly one request per record, none rejected, arrivals within the quota.
  expect(summary.limited).toMatchObject({ requestsSent: 10_000, rejected429: 0, recordsWritten: 10_000, duplicateWrites: 0, idealS: 5 });
  expect(summary.limited.audit.overLimitWindows).toBe(0);
  expect(summary.limited.audit.worstWindowRatio).toBeLessThanOrEqual(1);
  expect(summary.limited.timeToFinishS).toBeLessThanOrEqual(5 * 1.1);
  // Naive: the same records, but many more requests, most of the extra ones rejected.
  expect(summary.naive.recordsWritten).toBe(10_000);
  expect(summary.naive.rejected429).toBeGreaterThan(5_000);
  expect(summary.naive.requestsSent).toBe(10_000 + summary.naive.rejected429);
  expect(summary.chart).toMatch(/demo-output\/cosmos-azure\.svg$/);
});
