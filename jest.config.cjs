/** Jest runs the TypeScript sources through ts-jest as CommonJS (transpile only; `npm run typecheck` checks types). */
module.exports = {
  testEnvironment: "node",
  roots: ["<rootDir>/test"],
  testMatch: ["**/*.test.ts"],
  transform: {
    "^.+\\.ts$": ["ts-jest", { tsconfig: { module: "CommonJS", moduleResolution: "Node10", target: "ES2022", esModuleInterop: true, isolatedModules: true } }],
  },
  moduleNameMapper: { "^(\\.{1,2}/.*)\\.js$": "$1" },
  testTimeout: 60_000,
  // Integration suites start real servers and processes; two workers keep the 2-core machine responsive.
  maxWorkers: 2,
};
