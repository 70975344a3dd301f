import { renderChart } from "../../demo/chart.js";
import type { Arrival } from "../../demo/database.js";
import { roundStep, roundTicks, tickLabel } from "../../demo/ticks.js";

/** Whether x is 1, 2 or 5 × 10^n. */
function isRound(x: number): boolean {
  const mantissa = x / 10 ** Math.floor(Math.log10(x) + 1e-12);
  return [1, 2, 5].some((m) => Math.abs(mantissa - m) < 1e-9);
}

test("roundStep is the smallest 1, 2 or 5 × 10^n at or above the rough step", () => {
  const cases: Array<[number, number]> = [
    [1, 1], [1.1, 2], [2, 2], [2.01, 5], [3, 5], [5, 5], [6, 10], [9.99, 10], [10, 10], [0.3, 0.5], [0.07, 0.1],
    [4_400, 5_000], [5_000, 5_000], [12_345, 20_000], [0.0012, 0.002],
  ];
  for (const [rough, step] of cases) expect([rough, roundStep(rough)]).toEqual([rough, step]);
  expect(() => roundStep(0)).toThrow(RangeError);
  expect(() => roundStep(Number.NaN)).toThrow(RangeError);
});

test("roundTicks: from 0 to the first tick at or above the maximum, round steps, at most maxTicks intervals", () => {
  expect(roundTicks(22_000, 5)).toEqual({ ticks: [0, 5_000, 10_000, 15_000, 20_000, 25_000], step: 5_000, max: 25_000 });
  expect(roundTicks(550, 5)).toEqual({ ticks: [0, 200, 400, 600], step: 200, max: 600 });
  expect(roundTicks(7.76, 8)).toEqual({ ticks: [0, 1, 2, 3, 4, 5, 6, 7, 8], step: 1, max: 8 });
  expect(roundTicks(20, 8).ticks).toEqual([0, 5, 10, 15, 20]);
  expect(roundTicks(0.3, 5).ticks).toEqual([0, 0.1, 0.2, 0.3]);
  expect(roundTicks(0).ticks).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1]);
  for (let max = 0.37; max < 1e6; max *= 1.7) {
    for (const n of [4, 5, 8]) {
      const axis = roundTicks(max, n);
      expect(isRound(axis.step)).toBe(true);
      expect(axis.ticks.length - 1).toBeLessThanOrEqual(n);
      expect(axis.max).toBeGreaterThanOrEqual(max * (1 - 1e-12));
      expect(axis.max - axis.step).toBeLessThan(max);
      axis.ticks.forEach((t, i) => expect(t).toBeCloseTo(i * axis.step, 9));
    }
  }
});

test("tick labels have no float noise and group thousands", () => {
  expect([tickLabel(0.30000000000000004), tickLabel(20_000), tickLabel(2.5), tickLabel(0)]).toEqual(["0.3", "20,000", "2.5", "0"]);
});

test("the demo chart labels both axes with round values only", () => {
  // 7.76 s of arrivals at up to ~21,000 units per second against a 20,000/s quota.
  const arrivals: Arrival[] = [];
  for (let t = 0; t <= 7_760; t += 1) arrivals.push({ t, units: 21, processor: "cosmos", accepted: t % 3 !== 0 });
  const svg = renderChart([{ title: "t", arrivals, processors: ["cosmos"], startT: 0, showSent: true }], 20_000, 1000);
  const labels = [...svg.matchAll(/text-anchor="(end|middle)">([^<]+)<\/text>/g)].map((m) => [m[1], m[2]!] as const);
  const values = labels.filter(([a]) => a === "end").map(([, l]) => Number(l.replace(/,/g, "")));
  const seconds = labels.filter(([a, l]) => a === "middle" && / s$/.test(l)).map(([, l]) => Number(l.replace(/ s$/, "")));
  expect(values).toEqual([0, 5_000, 10_000, 15_000, 20_000, 25_000]);
  expect(seconds).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8]);
});
