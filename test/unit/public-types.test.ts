/**
 * The public API's type tests (test/types/public-api.ts, expect-type) compile against the sources
 * without a single diagnostic, and the harness does see a wrong type: a file with one false
 * expectation fails the same compile. scripts/check-package.mjs compiles the same file against the
 * packed tarball.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const ROOT = resolve(__dirname, "..", "..");
const TSC = join(ROOT, "node_modules", "typescript", "bin", "tsc");

function tsc(...args: string[]): Promise<{ code: number; output: string }> {
  return new Promise((done) => {
    execFile(process.execPath, [TSC, ...args], { cwd: ROOT, timeout: 120_000 }, (error, stdout, stderr) => {
      done({ code: error ? (typeof error.code === "number" ? error.code : -1) : 0, output: stdout + stderr });
    });
  });
}

test("test/types/public-api.ts compiles against the sources, with every entry in the program", async () => {
  const files = await tsc("-p", "test/types/tsconfig.json", "--listFilesOnly");
  const listed = files.output.split("\n").map((line) => line.trim());
  for (const file of ["test/types/public-api.ts", "src/index.ts", "src/entries/redis.ts", "src/entries/testing.ts", "src/entries/consumers/amqp.ts"]) {
    expect(listed).toContain(join(ROOT, file));
  }
  const result = await tsc("-p", "test/types/tsconfig.json");
  expect(result.output).toBe("");
  expect(result.code).toBe(0);
}, 120_000);

test("a false expectation fails the compile", async () => {
  const dir = mkdtempSync(join(tmpdir(), "prl-types-"));
  try {
    const file = join(dir, "negative.ts");
    writeFileSync(
      file,
      `import { expectTypeOf } from ${JSON.stringify(join(ROOT, "node_modules", "expect-type", "dist", "index.js"))};\n` +
        `import type { LimiterStats } from "partitioned-rate-limiter";\n` +
        `expectTypeOf<LimiterStats["heldPartitions"]>().toEqualTypeOf<string>();\n`,
    );
    const config = { extends: join(ROOT, "tsconfig.json"), compilerOptions: { types: ["node"], typeRoots: [join(ROOT, "node_modules", "@types")], noEmit: true }, files: [file] };
    writeFileSync(join(dir, "tsconfig.json"), JSON.stringify(config));
    const result = await tsc("-p", join(dir, "tsconfig.json"));
    expect(result.code).not.toBe(0);
    expect(result.output).toMatch(/negative\.ts\(3,\d+\): error TS2344/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}, 120_000);
