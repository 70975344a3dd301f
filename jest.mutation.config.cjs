/**
 * The jest configuration StrykerJS runs (stryker.config.mjs, docs/mutation-testing.md): the "unit"
 * project of jest.config.cjs, limited to its virtual-time tests of the limiter that finish in
 * seconds. Conformance against real servers, the model check, and the long property and fault
 * simulations (promise.property, faults-virtual, plan-contract) are left out: each mutant reruns
 * the tests that cover it, and those would make one run take hours on two cores.
 * MUTATION_TESTS narrows the set further (comma-separated paths), e.g.
 * MUTATION_TESTS=test/unit/lease-guards.test.ts for the quick run of docs/mutation-testing.md.
 */
const base = require("./jest.config.cjs");
const unit = base.projects.find((p) => p.displayName === "unit");

module.exports = {
  ...unit,
  displayName: undefined,
  testTimeout: 30_000,
  testMatch: process.env.MUTATION_TESTS
    ? process.env.MUTATION_TESTS.split(",").map((t) => `<rootDir>/${t}`)
    : [
    "<rootDir>/test/unit/lease-guards.test.ts",
    "<rootDir>/test/unit/limiter.test.ts",
    "<rootDir>/test/unit/limiter-smoke.test.ts",
    "<rootDir>/test/unit/limiter-pause.test.ts",
    "<rootDir>/test/unit/fair-share.test.ts",
    "<rootDir>/test/unit/fair-share-limiters.test.ts",
    "<rootDir>/test/unit/timing.test.ts",
  ],
};
