// Builds the ESM and CommonJS flavours of the package into dist/esm and dist/cjs.
// Each flavour gets a package.json naming its module type, so Node resolves
// `import` and `require` of the same relative paths correctly.
import { execFileSync } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";

const tsc = ["node_modules/typescript/bin/tsc", "-p", "tsconfig.build.json"];
rmSync("dist", { recursive: true, force: true });
execFileSync(process.execPath, [...tsc, "--outDir", "dist/esm"], { stdio: "inherit" });
execFileSync(
  process.execPath,
  [...tsc, "--outDir", "dist/cjs", "--module", "CommonJS", "--moduleResolution", "Node10"],
  { stdio: "inherit" },
);
mkdirSync("dist/esm", { recursive: true });
writeFileSync("dist/esm/package.json", JSON.stringify({ type: "module" }) + "\n");
writeFileSync("dist/cjs/package.json", JSON.stringify({ type: "commonjs" }) + "\n");
console.log("built dist/esm and dist/cjs");
