/**
 * partitioned-rate-limiter/testing: a virtual clock for tests of code that uses the limiter, and
 * the conformance suite that every lease backend passes, for a backend written for another store.
 * No peer dependency; the suite asserts with `node:assert` and registers with any test runner.
 */
export * from "../testing/index.js";
