/**
 * scripts/sync-readme-examples.mjs keeps README.md's code blocks equal to the files under
 * examples/ (which test/integration/readme-examples.test.ts type-checks and runs). Here: the
 * repository is in sync, and the check fails, naming the problem, on a copy that is not.
 */
import { execFile } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const ROOT = resolve(__dirname, "..", "..");
const SCRIPT = join(ROOT, "scripts", "sync-readme-examples.mjs");

function sync(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolveRun) => {
    execFile(process.execPath, [SCRIPT, ...args], { timeout: 30_000 }, (error, stdout, stderr) => {
      resolveRun({ code: error ? (typeof error.code === "number" ? error.code : -1) : 0, stdout, stderr });
    });
  });
}

let copy: string;
beforeEach(() => {
  copy = mkdtempSync(join(tmpdir(), "prl-readme-"));
  for (const entry of ["README.md", "package.json", "examples"]) cpSync(join(ROOT, entry), join(copy, entry), { recursive: true });
});
afterEach(() => rmSync(copy, { recursive: true, force: true }));

const edit = (file: string, change: (text: string) => string) => writeFileSync(join(copy, file), change(readFileSync(join(copy, file), "utf8")));

describe("sync-readme-examples", () => {
  test("the repository's README shows every example file exactly as it is", async () => {
    const result = await sync("--check");
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    const listed = JSON.parse((await sync("--list")).stdout) as string[];
    expect(result.stdout).toBe(`README examples: ${listed.length} files, all shown as they are\n`);
  });

  test("an edited example fails the check, and syncing copies it into the README", async () => {
    const [first] = JSON.parse((await sync("--list", "--root", copy)).stdout) as string[];
    edit(first!, (text) => `${text}console.log("one more line");\n`);
    const stale = await sync("--check", "--root", copy);
    expect(stale.code).toBe(1);
    expect(stale.stderr).toContain(`README.md shows an older ${first}`);
    expect((await sync("--root", copy)).code).toBe(0);
    expect(readFileSync(join(copy, "README.md"), "utf8")).toContain('console.log("one more line");\n```\n<!-- /example -->');
    expect((await sync("--check", "--root", copy)).code).toBe(0);
  });

  test("a TypeScript block outside the markers, an unshown file and a missing file are each named", async () => {
    edit("README.md", (text) => `${text}\n\`\`\`js\nconsole.log("stray");\n\`\`\`\n\n<!-- example: examples/missing.ts -->\n<!-- /example -->\n`);
    writeFileSync(join(copy, "examples", "unshown.ts"), "export {};\n");
    const result = await sync("--check", "--root", copy);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/README\.md:\d+: a js block outside <!-- example: \.\.\. --> markers/);
    expect(result.stderr).toContain("examples/missing.ts does not exist");
    expect(result.stderr).toContain("examples/unshown.ts is not shown in README.md");
  });

  test("examples/tsconfig.json maps every public entry of package.json exports to its source", async () => {
    const entries = (text: string) => Object.keys((JSON.parse(text) as { exports: Record<string, unknown> }).exports).filter((k) => k !== "./package.json");
    const before = entries(readFileSync(join(copy, "package.json"), "utf8"));
    edit("package.json", (text) => {
      const pkg = JSON.parse(text) as { exports: Record<string, unknown> };
      pkg.exports["./extra"] = { import: { types: "./dist/esm/entries/extra.d.ts", default: "./dist/esm/entries/extra.js" }, require: "./dist/cjs/entries/extra.js" };
      return JSON.stringify(pkg, null, 2);
    });
    const stale = await sync("--check", "--root", copy);
    expect(stale.code).toBe(1);
    expect(stale.stderr).toContain("examples/tsconfig.json does not match package.json exports");
    expect((await sync("--root", copy)).code).toBe(0);
    const config = JSON.parse(readFileSync(join(copy, "examples", "tsconfig.json"), "utf8")) as { compilerOptions: { paths: Record<string, string[]> } };
    expect(config.compilerOptions.paths["partitioned-rate-limiter"]).toEqual(["../src/index.ts"]);
    expect(config.compilerOptions.paths["partitioned-rate-limiter/extra"]).toEqual(["../src/entries/extra.ts"]);
    expect(Object.keys(config.compilerOptions.paths)).toHaveLength(before.length + 1);
  });
});
