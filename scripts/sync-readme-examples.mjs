// Keeps the README's code examples and the files under examples/ identical, so every TypeScript or
// JavaScript block a reader copies is a file that the tests type-check and run
// (test/integration/readme-examples.test.ts).
//
// In README.md an example is written as
//
//   <!-- example: examples/quickstart.ts -->
//   ```ts
//   ...the file's text, inserted by this script...
//   ```
//   <!-- /example -->
//
// Edit the file, then run `node scripts/sync-readme-examples.mjs` to copy it into the README.
// The script also writes examples/tsconfig.json, whose `paths` map each public entry of
// package.json `exports` ("partitioned-rate-limiter", and any subpath) to its source file, so the
// examples import only what the package exports and need no build.
//
//   node scripts/sync-readme-examples.mjs           update README.md and examples/tsconfig.json
//   node scripts/sync-readme-examples.mjs --check   change nothing; exit 1 naming every difference
//   node scripts/sync-readme-examples.mjs --list    print the examples in README order, as JSON
//   --root DIR                                      work on another checkout (the tests use a copy)
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, extname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const CODE_EXTENSIONS = { ".ts": "ts", ".mts": "ts", ".cts": "ts", ".js": "js", ".mjs": "js", ".cjs": "js" };
// Fence languages that mark a TypeScript or JavaScript block; any such block must be an example.
const CODE_FENCES = new Set(["ts", "typescript", "tsx", "js", "javascript", "jsx", "mjs", "cjs", "mts", "cts"]);
const OPEN = /^<!-- example: (\S+) -->$/;
const CLOSE = "<!-- /example -->";

/** Parses the command line; unknown arguments are an error. */
function parseCommandLine(argv) {
  const options = { check: false, list: false, root: resolve(dirname(fileURLToPath(import.meta.url)), "..") };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--check") options.check = true;
    else if (arg === "--list") options.list = true;
    else if (arg === "--root" && argv[i + 1] !== undefined) options.root = resolve(argv[++i]);
    else throw new Error(`unknown argument ${JSON.stringify(arg)}; expected --check, --list or --root DIR`);
  }
  return options;
}

/**
 * Splits the README into lines and finds every example region and every TS/JS block outside one.
 * Returns the regions in README order, plus problems (unbalanced markers, stray code blocks).
 */
function scanReadme(text) {
  const lines = text.split("\n");
  const regions = [];
  const problems = [];
  let open = null;
  let fence = null;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trimEnd();
    const fenceMatch = /^(```+|~~~+)\s*([\w+-]*)/.exec(line);
    if (fence !== null) {
      if (fenceMatch && fenceMatch[1].startsWith(fence) && fenceMatch[2] === "") fence = null;
      continue;
    }
    if (fenceMatch) {
      fence = fenceMatch[1];
      if (open === null && CODE_FENCES.has(fenceMatch[2].toLowerCase())) {
        problems.push(`README.md:${i + 1}: a ${fenceMatch[2]} block outside <!-- example: ... --> markers; move it into a file under examples/ and reference it`);
      }
      continue;
    }
    const openMatch = OPEN.exec(line);
    if (openMatch) {
      if (open !== null) problems.push(`README.md:${i + 1}: example ${openMatch[1]} opens inside example ${open.file} (line ${open.start + 1}), which has no ${CLOSE}`);
      open = { file: openMatch[1], start: i };
    } else if (line === CLOSE) {
      if (open === null) problems.push(`README.md:${i + 1}: ${CLOSE} without an opening <!-- example: ... -->`);
      else regions.push({ ...open, end: i });
      open = null;
    }
  }
  if (open !== null) problems.push(`README.md:${open.start + 1}: example ${open.file} is never closed with ${CLOSE}`);
  return { lines, regions, problems };
}

/** The fenced block the README shows for an example file's text. */
function block(file, source) {
  const language = CODE_EXTENSIONS[extname(file)];
  const body = source.endsWith("\n") ? source : `${source}\n`;
  return `\`\`\`${language}\n${body}\`\`\``;
}

/** examples/tsconfig.json: the project's compiler options, the public entries mapped to their sources. */
function examplesTsconfig(root) {
  const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
  const paths = {};
  for (const [subpath, target] of Object.entries(pkg.exports ?? {})) {
    if (subpath === "./package.json") continue;
    const built = esmTarget(target);
    const match = built === null ? null : /^\.\/dist\/esm\/(.+)\.(?:js|d\.ts)$/.exec(built);
    if (match === null) {
      throw new Error(`package.json exports ${JSON.stringify(subpath)} does not name a file under ./dist/esm (got ${JSON.stringify(target)}); the examples map dist/esm/X.js to src/X.ts`);
    }
    const name = subpath === "." ? pkg.name : `${pkg.name}/${subpath.replace(/^\.\//, "")}`;
    paths[name] = [`../src/${match[1]}.ts`];
  }
  const config = {
    "//": "Written by scripts/sync-readme-examples.mjs from package.json exports; do not edit.",
    extends: "../tsconfig.json",
    compilerOptions: { types: ["node"], noEmit: true, paths },
    include: ["*.ts", "*.mts", "*.cts"],
  };
  return `${JSON.stringify(config, null, 2)}\n`;
}

/** The ESM file an exports entry resolves to (its `import` condition, else `default`), or null. */
function esmTarget(target) {
  if (typeof target === "string") return target;
  if (target === null || typeof target !== "object") return null;
  for (const condition of ["import", "default"]) {
    if (condition in target) {
      const found = esmTarget(target[condition]);
      if (found !== null) return found;
    }
  }
  return null;
}

function main() {
  const options = parseCommandLine(process.argv.slice(2));
  const readmePath = join(options.root, "README.md");
  const readme = readFileSync(readmePath, "utf8");
  const { lines, regions, problems } = scanReadme(readme);

  if (options.list) {
    if (problems.length > 0) throw new Error(problems.join("\n"));
    process.stdout.write(`${JSON.stringify(regions.map((r) => r.file))}\n`);
    return;
  }

  const seen = new Set();
  for (const region of regions) {
    if (!/^examples\/[^/]+$/.test(region.file) || !(extname(region.file) in CODE_EXTENSIONS)) {
      problems.push(`README.md:${region.start + 1}: ${region.file} is not a .ts/.js file directly under examples/`);
    } else if (!existsSync(join(options.root, region.file))) {
      problems.push(`README.md:${region.start + 1}: ${region.file} does not exist`);
    }
    if (seen.has(region.file)) problems.push(`README.md:${region.start + 1}: ${region.file} is shown twice; show each example once`);
    seen.add(region.file);
  }
  const onDisk = readdirSync(join(options.root, "examples")).filter((f) => extname(f) in CODE_EXTENSIONS).map((f) => `examples/${f}`);
  for (const file of onDisk) if (!seen.has(file)) problems.push(`${file} is not shown in README.md; add <!-- example: ${file} --> ... <!-- /example --> where it belongs, or delete it`);
  if (problems.length > 0) {
    process.stderr.write(`README examples: ${problems.length} problem(s):\n  ${problems.join("\n  ")}\n`);
    process.exitCode = 1;
    return;
  }

  // Rebuild the README from the bottom up, so earlier line numbers stay valid.
  const stale = [];
  const out = [...lines];
  for (const region of [...regions].reverse()) {
    const wanted = block(region.file, readFileSync(join(options.root, region.file), "utf8"));
    const current = lines.slice(region.start + 1, region.end).join("\n");
    if (current !== wanted) stale.push(region.file);
    out.splice(region.start + 1, region.end - region.start - 1, ...wanted.split("\n"));
  }
  const tsconfigPath = join(options.root, "examples", "tsconfig.json");
  const tsconfig = examplesTsconfig(options.root);
  const tsconfigStale = !existsSync(tsconfigPath) || readFileSync(tsconfigPath, "utf8") !== tsconfig;

  if (options.check) {
    const differences = [...stale.reverse().map((f) => `README.md shows an older ${f}`), ...(tsconfigStale ? ["examples/tsconfig.json does not match package.json exports"] : [])];
    if (differences.length > 0) {
      process.stderr.write(`README examples out of date:\n  ${differences.join("\n  ")}\nRun: node scripts/sync-readme-examples.mjs\n`);
      process.exitCode = 1;
      return;
    }
    process.stdout.write(`README examples: ${regions.length} files, all shown as they are\n`);
    return;
  }
  if (stale.length > 0) writeFileSync(readmePath, out.join("\n"));
  if (tsconfigStale) writeFileSync(tsconfigPath, tsconfig);
  process.stdout.write(`README examples: ${regions.length} files; updated ${stale.length} in README.md${tsconfigStale ? ", wrote examples/tsconfig.json" : ""}\n`);
}

try {
  main();
} catch (error) {
  process.stderr.write(`sync-readme-examples: ${error.message}\n`);
  process.exitCode = 2;
}
