import { execFile } from "node:child_process";
import { join } from "node:path";
import { performance } from "node:perf_hooks";

// One child process (tsx start-up, a second or two of real time).
test("a process with OpenTelemetry metrics registered exits once its limiter is closed", async () => {
  const root = join(__dirname, "..", "..");
  const start = performance.now();
  const stdout = await new Promise<string>((resolve, reject) => {
    execFile(process.execPath, ["--import", "tsx", join(root, "test/integration/fixtures/otel-exit-child.ts")], { cwd: root, timeout: 30_000 },
      (error, out, err) => (error ? reject(new Error(`child did not exit cleanly: ${error.message}\n${err}`)) : resolve(out)));
  });
  expect(stdout).toContain("admissions 1");
  // The export interval is 60 s: exiting well before it means no timer held the process.
  expect(performance.now() - start).toBeLessThan(25_000);
});
