import { parseRetryAfter } from "../../src/flow/retry-after.js";
import { fullJitterBackoff } from "../../src/flow/full-jitter-backoff.js";

const NOW = Date.parse("2015-10-21T07:28:00Z");

describe("parseRetryAfter", () => {
  test("delta-seconds", () => {
    expect(parseRetryAfter("0")).toBe(0);
    expect(parseRetryAfter("1")).toBe(1000);
    expect(parseRetryAfter(" 120 ")).toBe(120_000);
  });
  test("HTTP-date in all three RFC 9110 forms, measured from nowMs", () => {
    expect(parseRetryAfter("Wed, 21 Oct 2015 07:28:05 GMT", { nowMs: NOW })).toBe(5000);
    expect(parseRetryAfter("Wednesday, 21-Oct-15 07:28:05 GMT", { nowMs: NOW })).toBe(5000);
    expect(parseRetryAfter("Wed Oct 21 07:28:05 2015", { nowMs: NOW })).toBe(5000);
  });
  test("a date in the past gives 0", () => {
    expect(parseRetryAfter("Wed, 21 Oct 2015 07:27:00 GMT", { nowMs: NOW })).toBe(0);
  });
  test("garbage, negative and fractional values give null", () => {
    for (const bad of ["", "  ", "soon", "-1", "1.5", "1e3", "0x10", "Infinity", "NaN", "12abc", "Wed, 99 Foo 2015 99:99:99 GMT", "2015-10-21T07:28:05Z"]) {
      expect([bad, parseRetryAfter(bad, { nowMs: NOW })]).toEqual([bad, null]);
    }
    expect(parseRetryAfter(null)).toBeNull();
    expect(parseRetryAfter(undefined)).toBeNull();
  });
  test("huge values are capped", () => {
    expect(parseRetryAfter("999999999")).toBe(3_600_000);
    expect(parseRetryAfter("9".repeat(400))).toBe(3_600_000);
    expect(parseRetryAfter("100", { maxMs: 5000 })).toBe(5000);
    expect(parseRetryAfter("Fri, 31 Dec 9999 23:59:59 GMT", { nowMs: NOW, maxMs: 7000 })).toBe(7000);
  });
});

describe("fullJitterBackoff", () => {
  test("uniform in [0, min(max, base * 2^attempt))", () => {
    expect(fullJitterBackoff(0, 100, 1000, () => 0)).toBe(0);
    expect(fullJitterBackoff(0, 100, 1000, () => 0.5)).toBe(50);
    expect(fullJitterBackoff(3, 100, 1000, () => 0.5)).toBe(400);
    expect(fullJitterBackoff(10, 100, 1000, () => 0.999)).toBeCloseTo(999);
    expect(fullJitterBackoff(5000, 100, 1000, () => 0.5)).toBe(500);
    for (let attempt = 0; attempt < 20; attempt++) {
      const d = fullJitterBackoff(attempt, 10, 300);
      expect(d).toBeGreaterThanOrEqual(0);
      expect(d).toBeLessThan(Math.min(300, 10 * 2 ** attempt));
    }
  });
});
