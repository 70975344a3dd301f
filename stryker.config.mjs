// Mutation testing of the limiter (docs/mutation-testing.md): `npm run mutation`. Slow, so it is
// not part of `npm test`. On the 2-core machines this runs on: one test runner at a time, niced.
// MUTATE narrows it, e.g. MUTATE=src/limiter/lease-manager.ts:379-436 npm run mutation.
/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  packageManager: "npm",
  testRunner: "jest",
  jest: { configFile: "jest.mutation.config.cjs", enableFindRelatedTests: false },
  coverageAnalysis: "perTest",
  mutate: process.env.MUTATE ? process.env.MUTATE.split(",") : ["src/limiter/**/*.ts", "!src/limiter/index.ts"],
  // The lease backends' scripts (Lua in src/lease-backends/redis-scripts.ts) are string literals:
  // Stryker's only mutation of them would blank the whole script, so they are not mutated here.
  ignoreStatic: true,
  concurrency: 1,
  timeoutMS: 5_000,
  timeoutFactor: 2,
  reporters: ["clear-text", "progress", "json", "html"],
  jsonReporter: { fileName: "reports/mutation/mutation.json" },
  htmlReporter: { fileName: "reports/mutation/mutation.html" },
  tempDirName: ".stryker-tmp",
  cleanTempDir: "always",
};
