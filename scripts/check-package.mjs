// Packs the package, installs the tarball into a scratch project without any optional peer
// dependency, and checks that both `import` and `require` load it and that type declarations
// resolve for ESM and CommonJS consumers. Run after `npm run build`.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const root = resolve(".");
const scratch = mkdtempSync(join(tmpdir(), "prl-pack-"));
const run = (cmd, args, cwd = scratch) => execFileSync(cmd, args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
try {
  const tarball = run("npm", ["pack", "--silent", "--pack-destination", scratch], root).trim().split("\n").pop();
  writeFileSync(join(scratch, "package.json"), JSON.stringify({ name: "consumer", version: "1.0.0", private: true }));
  run("npm", ["install", "--silent", "--no-audit", "--no-fund", join(scratch, tarball)]);
  const cjs = run(process.execPath, ["-e", "const m = require('partitioned-rate-limiter'); if (typeof m.PartitionedRateLimiter !== 'function' || typeof m.MemoryLeaseBackend !== 'function') process.exit(1); console.log(Object.keys(m).length)"]);
  const esm = run(process.execPath, ["--input-type=module", "-e", "import { PartitionedRateLimiter, MemoryLeaseBackend, ConfigError } from 'partitioned-rate-limiter'; if (typeof PartitionedRateLimiter !== 'function' || typeof ConfigError !== 'function') process.exit(1); const l = new PartitionedRateLimiter({ resource: 'x', limit: 10, intervalMs: 1000, partitions: 2, backend: new MemoryLeaseBackend() }); await l.close(); console.log('ok')"]);
  // Types: an ESM and a CommonJS consumer, type-checked with the project's TypeScript. With
  // skipLibCheck (the tsc --init default): the declarations name the optional peers' types, which a
  // consumer without those packages cannot resolve (README, "TypeScript").
  const source = "import { PartitionedRateLimiter, MemoryLeaseBackend, type LimiterStats } from 'partitioned-rate-limiter';\nconst l = new PartitionedRateLimiter({ resource: 'x', limit: 10, intervalMs: 1000, partitions: 2, backend: new MemoryLeaseBackend() });\nconst s: LimiterStats = l.stats();\nexport const held: number = s.heldPartitions;\n";
  writeFileSync(join(scratch, "esm.mts"), source);
  writeFileSync(join(scratch, "cjs.cts"), source);
  const tsc = join(root, "node_modules/typescript/bin/tsc");
  for (const file of ["esm.mts", "cjs.cts"]) {
    run(process.execPath, [tsc, "--noEmit", "--strict", "--module", "nodenext", "--moduleResolution", "nodenext", "--types", "node", "--typeRoots", join(root, "node_modules/@types"), "--skipLibCheck", file]);
  }
  console.log(`package check: require loads ${cjs.trim()} exports, import works (${esm.trim()}), types resolve for ESM and CommonJS`);
} catch (error) {
  console.error(`package check failed: ${error.message}\n${error.stdout ?? ""}${error.stderr ?? ""}`);
  process.exitCode = 1;
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
