/**
 * Jest runs the TypeScript sources through ts-jest as CommonJS (transpile only; `npm run typecheck`
 * checks types). Two projects: "unit" (virtual time, conformance against real servers; run in
 * parallel) and "system" (several real processes per test, audited on arrival times; run one file
 * at a time, since two such files at once overload a 2-core machine and the arrival spread would
 * exceed the `jitterMs` the tests configure). `npm test` runs both.
 */
const transform = {
  "^.+\\.ts$": ["ts-jest", { tsconfig: { module: "CommonJS", moduleResolution: "Node10", target: "ES2022", esModuleInterop: true, isolatedModules: true } }],
};
const common = {
  testEnvironment: "node",
  rootDir: __dirname,
  transform,
  moduleNameMapper: {
    "^(\\.{1,2}/.*)\\.js$": "$1",
    // The package by name, as in tsconfig.json "paths": the root entry and each subpath's entry file.
    "^partitioned-rate-limiter$": "<rootDir>/src/index.ts",
    "^partitioned-rate-limiter/(.+)$": "<rootDir>/src/entries/$1.ts",
  },
};

module.exports = {
  testTimeout: 60_000,
  projects: [
    { ...common, displayName: "unit", testMatch: ["<rootDir>/test/unit/**/*.test.ts", "<rootDir>/test/conformance/**/*.test.ts", "<rootDir>/test/model/**/*.test.ts"] },
    { ...common, displayName: "system", testMatch: ["<rootDir>/test/integration/**/*.test.ts", "<rootDir>/test/faults/**/*.test.ts"] },
  ],
};
