import { changesBetween } from "../../src/dashboard/changes.js";
import type { DashboardSnapshot, PartitionView } from "../../src/dashboard/snapshot.js";
import type { HolderStatus } from "../../src/cli/holder-status.js";
import { validatePlan } from "../../src/contract/plan.js";

const plan = validatePlan({ limit: 40, intervalMs: 1000, partitions: 4 });

function holder(holderId: string): HolderStatus {
  return { holderId, pool: null, wants: 2, weight: 1, reserve: 0, held: [], demand: 0, rate: 0, since: 1, expiresInMs: 1000, fairShare: 2 };
}

function reading(holders: (string | null)[], extra: Partial<DashboardSnapshot> = {}): DashboardSnapshot {
  const partitions: PartitionView[] = holders.map((holderId, partition) => ({ partition, pool: null, holderId, expiresInMs: holderId === null ? null : 1000, epoch: holderId === null ? null : 1 }));
  const ids = [...new Set(holders.filter((h): h is string => h !== null))];
  return { resource: "r", backend: "memory", readAt: 0, plan, epoch: 1, graceMs: 0, partitions, holders: ids.map(holder), error: null, ...extra };
}

describe("changesBetween: what happened between two readings", () => {
  test("nothing for the first reading, nor for an unchanged one", () => {
    expect(changesBetween(null, reading(["a", "b", null, null]))).toEqual([]);
    expect(changesBetween(reading(["a", "b", null, null]), reading(["a", "b", null, null]))).toEqual([]);
  });

  test("a partition taken, moved and freed; holders joining and leaving", () => {
    const before = reading(["a", "a", "b", null]);
    const after = reading(["c", "a", null, "a"]);
    expect(changesBetween(before, after)).toEqual([
      { kind: "holder-joined", holderId: "c" },
      { kind: "moved", partition: 0, from: "a", to: "c" },
      { kind: "freed", partition: 2, holderId: "b" },
      { kind: "taken", partition: 3, holderId: "a" },
      { kind: "holder-left", holderId: "b" },
    ]);
  });

  test("grace periods starting and ending, and epochs changing, come first", () => {
    const base = reading([null, null, null, null]);
    expect(changesBetween(base, { ...base, epoch: 2, graceMs: 1500 })).toEqual([
      { kind: "epoch", from: 1, to: 2 },
      { kind: "grace-started", graceMs: 1500 },
    ]);
    expect(changesBetween({ ...base, graceMs: 10 }, base)).toEqual([{ kind: "grace-ended" }]);
    // A grace that merely runs down is no change.
    expect(changesBetween({ ...base, graceMs: 1500 }, { ...base, graceMs: 1000 })).toEqual([]);
    expect(changesBetween({ ...base, epoch: null, plan: null, partitions: [] }, base)).toEqual([{ kind: "epoch", from: null, to: 1 }]);
  });

  test("a deleted plan frees what was held on it", () => {
    const before = reading(["a", null, null, "b"]);
    const after: DashboardSnapshot = { ...before, plan: null, epoch: null, partitions: [], holders: [] };
    expect(changesBetween(before, after)).toEqual([
      { kind: "epoch", from: 1, to: null },
      { kind: "freed", partition: 0, holderId: "a" },
      { kind: "freed", partition: 3, holderId: "b" },
      { kind: "holder-left", holderId: "a" },
      { kind: "holder-left", holderId: "b" },
    ]);
  });
});
