import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readChecks, runChecks, summaryLine, type CheckResult, type ModelCheck } from "./spin-runner.js";
import { ensureModelTools, type ModelTools } from "./tools.js";

/**
 * The lease protocol, model-checked (docs/model.md): SPIN explores every interleaving of a small
 * configuration of model/lease.pml. The protocol must verify with 0 errors over the whole state
 * space; every variant with one guard removed must produce a counterexample ending in the violation
 * that guard prevents; and the holes the model found in the protocol as specified ("finding" lines
 * of model/checks.txt) must still show, until the protocol is fixed and the lines are changed to
 * verify. Prints states, transitions, depth and time of every check.
 */

const checks = readChecks();
let tools: ModelTools;
let workDir: string;
let results: Map<string, CheckResult>;

beforeAll(async () => {
  tools = ensureModelTools();
  workDir = mkdtempSync(join(tmpdir(), "prl-model-"));
  const started = Date.now();
  // Two at a time: the machines this runs on have two cores.
  const all = await runChecks(checks, tools, workDir, 2);
  results = new Map(all.map((r) => [r.check.name, r]));
  const findings = all.filter((r) => r.check.expect === "finding" && r.errors > 0);
  console.log(
    [
      `${tools.spinVersion}; ${tools.ccVersion}`,
      ...all.map(summaryLine),
      `${all.length} checks in ${((Date.now() - started) / 1000).toFixed(1)} s`,
      ...findings.flatMap((r) => [`FINDING ${r.check.name} (docs/model.md, "Findings"): the protocol as specified fails:`, ...r.trail.slice(-12).map((l) => `  ${l}`)]),
    ].join("\n"),
  );
}, 300_000);

afterAll(() => {
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

function result(check: ModelCheck): CheckResult {
  const r = results.get(check.name);
  if (!r) throw new Error(`no result for ${check.name}`);
  return r;
}

const verifies = checks.filter((c) => c.expect === "verify");
const fails = checks.filter((c) => c.expect !== "verify");

test("the table has the protocol, its fixed configurations and at least one broken variant per guard", () => {
  expect(verifies.map((c) => c.name)).toEqual(expect.arrayContaining(["lease", "fair-share", "settings", "epoch"]));
  for (const guard of ["NO_QUIET", "REPLY_DEADLINE", "NO_GRACE", "NO_BACKEND_EPOCH", "NO_SETTINGS_CHECK"]) {
    expect(fails.filter((c) => c.expect === "fail" && c.defines.includes(`-D${guard}`))).toHaveLength(1);
  }
});

test.each(verifies.map((c) => [c.name, c] as const))("%s verifies: 0 errors over the whole state space", (_name, check) => {
  const r = result(check);
  expect(r.truncated).toBeNull();
  expect(r.statesStored).toBeGreaterThan(1000);
  expect({ errors: r.errors, trail: r.trail.slice(-15) }).toEqual({ errors: 0, trail: [] });
});

test.each(fails.map((c) => [c.name, c] as const))("%s yields a counterexample trail", (_name, check) => {
  const r = result(check);
  expect(r.errors).toBeGreaterThan(0);
  expect(r.trail.length).toBeGreaterThan(0);
  // The counterexample ends in the violation the removed guard prevents, not in some other one.
  expect({ violation: r.violation, trailEnd: r.violation === check.violation ? [] : r.trail.slice(-15) }).toEqual({
    violation: check.violation,
    trailEnd: [],
  });
});
