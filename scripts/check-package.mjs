// Checks the package as a user gets it. Run after `npm run build`; .ci/run runs it.
//
//  1. Contents: the packed tarball holds every file package.json names (exports, typesVersions,
//     main, module, types, bin), typesVersions covers every subpath, the LICENSE and every image
//     the README shows by a relative path.
//  2. Peers in the declarations: following the .d.ts files of each entry (ESM and CommonJS), the
//     root entry and /testing name no optional peer, and every other entry names only its own.
//  3. A consumer with only this package installed (and @types/node): import and require load
//     every entry with no peer installed, the bin runs, and the README's memory example (ESM) and
//     a CommonJS consumer compile with `skipLibCheck: false` (node16 and node10 resolution).
//  4. A consumer with ioredis installed: the README's Redis examples (ESM) and a CommonJS
//     consumer of /redis compile with `skipLibCheck: false`.
//  5. A consumer with every optional peer installed: the public API's type tests
//     (test/types/public-api.ts) compile against the tarball, as ESM and as CommonJS.
//  6. `attw --pack` (@arethetypeswrong/cli) reports no problem.
//
// Peers are installed at the versions this checkout uses (npm ci), from npm's cache where it has them.
import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { builtinModules, createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";

const root = resolve(".");
const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
const ts = createRequire(join(root, "package.json"))("typescript");
const tsc = join(root, "node_modules/typescript/bin/tsc");

/** The optional peers each entry's declarations may name (amqplib's types come from @types/amqplib). */
const ENTRY_PEERS = {
  ".": [],
  "./testing": [],
  "./redis": ["ioredis"],
  "./etcd": ["etcd3"],
  "./zookeeper": ["node-zookeeper-client"],
  "./azure-blob": ["@azure/storage-blob"],
  "./consumers/redis-streams": ["ioredis"],
  "./consumers/amqp": ["amqplib"],
  "./consumers/azure-queue": ["@azure/storage-queue"],
  "./metrics": ["prom-client"],
  "./otel": ["@opentelemetry/api"],
  "./grpc": ["@grpc/grpc-js"],
};
/** What a consumer installs for a peer's types. */
const TYPES_OF = { amqplib: ["amqplib", "@types/amqplib"] };

const scratch = mkdtempSync(join(tmpdir(), "prl-pack-"));
const results = [];
const run = (cmd, args, cwd) => execFileSync(cmd, args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], maxBuffer: 64 * 1024 * 1024 });
const pass = (line) => {
  results.push(line);
  console.log(`ok: ${line}`);
};
const versionOf = (name) => JSON.parse(readFileSync(join(root, "node_modules", name, "package.json"), "utf8")).version;

/** A consumer project in `dir` with the tarball and `extra` packages (at this checkout's versions) installed. */
function consumer(name, tarball, extra) {
  const dir = join(scratch, name);
  mkdirSync(dir);
  writeFileSync(join(dir, "package.json"), JSON.stringify({ name: `consumer-${name}`, version: "1.0.0", private: true }));
  const specs = ["@types/node", ...extra].map((p) => `${p}@${versionOf(p)}`);
  run("npm", ["install", "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error", tarball, ...specs], dir);
  return dir;
}

/** Type-checks `files` in `dir` as a user's project would: strict, skipLibCheck false. */
function compile(dir, files, resolution = "nodenext") {
  const mode = resolution === "node10" ? ["--module", "commonjs", "--moduleResolution", "node10", "--esModuleInterop"] : ["--module", "nodenext", "--moduleResolution", "nodenext"];
  try {
    run(process.execPath, [tsc, "--noEmit", "--strict", "--skipLibCheck", "false", "--target", "es2022", "--types", "node", ...mode, ...files], dir);
  } catch (error) {
    throw new Error(`tsc (${resolution}, skipLibCheck false) failed in ${dir} for ${files.join(", ")}:\n${error.stdout}${error.stderr}`);
  }
}

/** The files a tarball holds, as `package/…` paths without the prefix. */
function tarballFiles(tarball) {
  return new Set(run("tar", ["-tzf", tarball], scratch).split("\n").filter(Boolean).map((f) => f.replace(/^package\//, "")));
}

/** Every string target under an exports entry (conditions nested). */
function targets(value) {
  if (typeof value === "string") return [value];
  return Object.values(value ?? {}).flatMap(targets);
}

/** The bare module names the declarations reachable from `entry` import, with the files read. */
function declaredImports(entry) {
  const seen = new Set();
  const names = new Set();
  const visit = (file) => {
    if (seen.has(file)) return;
    seen.add(file);
    const source = ts.createSourceFile(file, readFileSync(file, "utf8"), ts.ScriptTarget.Latest, true);
    for (const ref of source.typeReferenceDirectives) names.add(ref.fileName);
    const specifiers = [];
    const walk = (node) => {
      if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier) specifiers.push(node.moduleSpecifier.text);
      if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument)) specifiers.push(node.argument.literal.text);
      if (ts.isExternalModuleReference(node)) specifiers.push(node.expression.text);
      ts.forEachChild(node, walk);
    };
    walk(source);
    for (const spec of specifiers) {
      if (spec.startsWith(".")) visit(resolve(dirname(file), spec.replace(/\.js$/, ".d.ts")));
      else names.add(spec);
    }
  };
  visit(entry);
  return { names, files: seen.size };
}

const packageName = (spec) => (spec.startsWith("@") ? spec.split("/").slice(0, 2).join("/") : spec.split("/")[0]);
const isBuiltin = (name) => name.startsWith("node:") || builtinModules.includes(name);

try {
  // 1. Contents.
  const tarball = join(scratch, run("npm", ["pack", "--silent", "--pack-destination", scratch], root).trim().split("\n").pop());
  const files = tarballFiles(tarball);
  const subpaths = Object.keys(pkg.exports).filter((k) => k !== "./package.json");
  const named = [
    ...subpaths.flatMap((k) => targets(pkg.exports[k])),
    ...Object.values(pkg.typesVersions?.["*"] ?? {}).flat(),
    pkg.main, pkg.module, pkg.types,
    ...Object.values(pkg.bin ?? {}),
  ].map((f) => f.replace(/^\.\//, ""));
  const absent = [...new Set(named)].filter((f) => !files.has(f));
  if (absent.length > 0) throw new Error(`the tarball lacks ${absent.join(", ")}, which package.json names`);
  const versioned = Object.keys(pkg.typesVersions?.["*"] ?? {}).sort();
  const expected = subpaths.filter((k) => k !== ".").map((k) => k.slice(2)).sort();
  if (JSON.stringify(versioned) !== JSON.stringify(expected)) {
    throw new Error(`typesVersions (for node10 resolution) lists ${versioned.join(", ")}; exports has ${expected.join(", ")}`);
  }
  for (const k of subpaths.filter((k) => k !== ".")) {
    const cjsTypes = pkg.exports[k].require.types.replace(/^\.\//, "");
    if (pkg.typesVersions["*"][k.slice(2)][0].replace(/^\.\//, "") !== cjsTypes) throw new Error(`typesVersions["${k.slice(2)}"] does not name ${cjsTypes}`);
  }
  const readme = readFileSync(join(root, "README.md"), "utf8");
  const images = [...readme.matchAll(/!\[[^\]]*\]\(([^)\s]+)[^)]*\)/g)].map((m) => m[1]).filter((src) => !/^[a-z]+:/i.test(src));
  // Documents the README links by a relative path (docs/guarantee.md, ...) ship too, so its links
  // work on the registry's page and in node_modules.
  const documents = [...new Set([...readme.matchAll(/(?<!!)\[[^\]]*\]\((docs\/[^)#\s]+)(?:#[^)]*)?\)/g)].map((m) => m[1]))];
  const missing = ["LICENSE", "README.md", ...images, ...documents].filter((file) => !files.has(file));
  if (missing.length > 0) throw new Error(`the package lacks ${missing.join(", ")} (add them to "files" in package.json)`);
  pass(`tarball: ${files.size} files, every file package.json names (${subpaths.length} entries × ESM/CJS × JS/types, typesVersions, bin), LICENSE, ${images.length} README image(s) and ${documents.length} linked document(s)`);

  // 2. Which peers each entry's declarations name.
  const optional = Object.keys(pkg.peerDependenciesMeta ?? {}).filter((p) => pkg.peerDependenciesMeta[p].optional);
  if (JSON.stringify(Object.keys(ENTRY_PEERS).sort()) !== JSON.stringify([...subpaths].sort())) {
    throw new Error(`scripts/check-package.mjs ENTRY_PEERS lists ${Object.keys(ENTRY_PEERS).join(", ")}; exports has ${subpaths.join(", ")}`);
  }
  const unpacked = join(scratch, "unpacked");
  mkdirSync(unpacked);
  run("tar", ["-xzf", tarball, "-C", unpacked], scratch);
  const peerRows = [];
  for (const k of subpaths) {
    for (const condition of ["import", "require"]) {
      const { names, files: read } = declaredImports(join(unpacked, "package", pkg.exports[k][condition].types));
      const peers = [...names].filter((n) => !isBuiltin(n)).map(packageName);
      const allowed = new Set(["node", ...ENTRY_PEERS[k], ...ENTRY_PEERS[k].map((p) => `@types/${p}`)]);
      const stray = [...new Set(peers)].filter((p) => !allowed.has(p));
      if (stray.length > 0) throw new Error(`the ${condition} declarations of ${k} name ${stray.join(", ")}; ${k} may name only ${[...allowed].join(", ")}`);
      const undeclared = [...new Set(peers)].filter((p) => p !== "node" && !optional.includes(p));
      if (undeclared.length > 0) throw new Error(`${k} names ${undeclared.join(", ")}, not an optional peer dependency`);
      if (condition === "import") peerRows.push(`${k} → ${[...new Set(peers)].filter((p) => p !== "node").join(", ") || "none"} (${read} .d.ts)`);
    }
  }
  pass(`declarations name only their own peer: ${peerRows.join("; ")}`);

  // 3. Only this package (and @types/node).
  const bare = consumer("bare", tarball, []);
  const specifiers = subpaths.map((k) => (k === "." ? pkg.name : `${pkg.name}/${k.slice(2)}`));
  const load = `const failed = []; for (const s of ${JSON.stringify(specifiers)}) { try { LOAD; } catch (e) { failed.push(s + ": " + e.message); } } if (failed.length) { console.error(failed.join("\\n")); process.exit(1); }`;
  run(process.execPath, ["-e", load.replace("LOAD", "require(s)")], bare);
  run(process.execPath, ["--input-type=module", "-e", load.replace("LOAD", "await import(s)")], bare);
  const help = run(join(bare, "node_modules", ".bin", "partitioned-rate-limiter"), ["--help"], bare);
  if (!/status/.test(help) || !/plan/.test(help)) throw new Error(`the bin's --help does not list its commands:\n${help}`);
  cpSync(join(root, "examples", "memory-backend.ts"), join(bare, "memory-backend.mts"));
  const cjsRoot =
    'import { MemoryLeaseBackend, PartitionedRateLimiter, ConfigError, type LimiterStats } from "partitioned-rate-limiter";\n' +
    'import { VirtualClock } from "partitioned-rate-limiter/testing";\n' +
    "const clock = new VirtualClock();\n" +
    'const limiter = new PartitionedRateLimiter({ resource: "x", limit: 10, intervalMs: 1000, partitions: 2, backend: new MemoryLeaseBackend({ clock }), clock });\n' +
    'limiter.on("lost", (e) => console.log(e.partition, e.reason));\n' +
    "const stats: LimiterStats = limiter.stats();\n" +
    "export const held: number = stats.heldPartitions;\n" +
    "export const isConfigError = (e: unknown): boolean => ConfigError.is(e);\n";
  writeFileSync(join(bare, "root.cts"), cjsRoot);
  writeFileSync(join(bare, "root-node10.ts"), cjsRoot);
  compile(bare, ["memory-backend.mts", "root.cts"]);
  compile(bare, ["root-node10.ts"], "node10");
  pass(`only ${pkg.name} and @types/node installed: require and import load all ${specifiers.length} entries, the bin answers --help, the README's memory example (ESM) and a CommonJS consumer of the root and /testing compile with skipLibCheck false (node16; CommonJS also node10)`);

  // 4. ioredis installed.
  const withRedis = consumer("ioredis", tarball, ["ioredis"]);
  cpSync(join(root, "examples", "redis-backend.ts"), join(withRedis, "redis-backend.mts"));
  cpSync(join(root, "examples", "quickstart.ts"), join(withRedis, "quickstart.mts"));
  writeFileSync(
    join(withRedis, "redis.cts"),
    'import { Redis } from "ioredis";\n' +
      'import { PartitionedRateLimiter } from "partitioned-rate-limiter";\n' +
      'import { RedisLeaseBackend, RedlockLeaseBackend } from "partitioned-rate-limiter/redis";\n' +
      "const redis = new Redis({ lazyConnect: true, enableOfflineQueue: false });\n" +
      'export const limiter = new PartitionedRateLimiter({ resource: "x", limit: 10, intervalMs: 1000, partitions: 2, backend: new RedisLeaseBackend({ client: redis }) });\n' +
      "export const quorum = new RedlockLeaseBackend({ clients: [redis, redis, redis] });\n",
  );
  compile(withRedis, ["redis-backend.mts", "quickstart.mts", "redis.cts"]);
  pass(`${pkg.name} and ioredis ${versionOf("ioredis")} installed: the README's Redis and quick-start examples (ESM) and a CommonJS consumer of /redis compile with skipLibCheck false`);

  // 5. Every peer installed: the type tests against the tarball.
  const peers = [...new Set(Object.values(ENTRY_PEERS).flat())].flatMap((p) => TYPES_OF[p] ?? [p]);
  const everything = consumer("all-peers", tarball, [...peers, "expect-type"]);
  cpSync(join(root, "test", "types", "public-api.ts"), join(everything, "public-api.mts"));
  cpSync(join(root, "test", "types", "public-api.ts"), join(everything, "public-api.cts"));
  compile(everything, ["public-api.mts"]);
  compile(everything, ["public-api.cts"]);
  pass(`every optional peer installed (${peers.map((p) => `${p} ${versionOf(p)}`).join(", ")}): test/types/public-api.ts compiles against the tarball as ESM and as CommonJS, skipLibCheck false`);

  // 6. Are the types wrong?
  try {
    const attw = run(join(root, "node_modules", ".bin", "attw"), ["--pack", root, "--format", "ascii", "--no-color"], root);
    const verdict = attw.split("\n").find((line) => /problems? found/i.test(line))?.trim() ?? "no verdict line";
    pass(`attw --pack: ${verdict}`);
  } catch (error) {
    throw new Error(`attw --pack reports problems:\n${error.stdout}${error.stderr}`);
  }
  console.log(`package check: ${results.length} checks passed`);
} catch (error) {
  console.error(`package check failed: ${error.message}\n${error.stdout ?? ""}${error.stderr ?? ""}`);
  process.exitCode = 1;
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
