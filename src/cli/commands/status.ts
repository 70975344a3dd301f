import type { PartitionState, ResourceState } from "../../contract/lease-backend.js";
import { partitionPools } from "../../contract/plan.js";
import { holderStatuses, type HolderStatus } from "../holder-status.js";
import { EXIT, resourceArgument, withBackend, type Command } from "../command.js";
import { describePlan } from "../format-plan.js";

/** `status <resource>`: the stored plan, a running grace, every partition and every holder's demand and fair share. */
export const statusCommand: Command = {
  name: "status",
  synopsis: "status <resource> --backend <address> [--json]",
  description:
    "The stored plan and its epoch, a running grace period and when it ends, per partition its pool, holder and time left " +
    "on the lease, and per holder what it published: wants, weight, reserve, held partitions, recent rate, and the fair " +
    "share every limiter computes from those records. Exit 3 when no plan is stored.",
  options: {},
  async run(line, io) {
    const resource = resourceArgument(line, "status");
    const json = line.flag("json");
    return withBackend(line, io, async ({ backend, where, timeoutMs }) => {
      const state = await backend.inspect(resource, { timeoutMs });
      if (state.stored === null) {
        if (json) io.out.write(`${JSON.stringify({ resource, backend: backend.name, plan: null, epoch: null, graceMs: state.graceMs, partitions: [], holders: [] })}\n`);
        io.err.write(`no plan is stored for ${JSON.stringify(resource)} on ${where}${state.graceMs > 0 ? ` (a grace period runs for ${Math.ceil(state.graceMs)} ms more)` : ""}\n`);
        return EXIT.planMismatch;
      }
      const holders = holderStatuses(state.stored, state.holders);
      if (json) {
        const graceEndsAt = state.graceMs > 0 ? new Date(Date.now() + state.graceMs).toISOString() : null;
        io.out.write(`${JSON.stringify({ resource, backend: backend.name, plan: state.stored.plan, epoch: state.stored.epoch, graceMs: state.graceMs, graceEndsAt, partitions: state.partitions, holders })}\n`);
      } else {
        io.out.write(formatStatus(resource, where, state, holders));
      }
      return EXIT.ok;
    });
  },
};

export type { HolderStatus } from "../holder-status.js";

function formatStatus(resource: string, where: string, state: ResourceState, holders: readonly HolderStatus[]): string {
  const stored = state.stored!;
  const owners = partitionPools(stored.plan);
  const held = state.partitions.filter((p) => p.holderId !== null).length;
  const grace = state.graceMs > 0 ? `grace period: no lease is granted for ${(state.graceMs / 1000).toFixed(1)} s more\n` : "";
  const partitions = table([["partition", "pool", "holder", "time left", "fencing", "epoch"], ...state.partitions.map((p) => partitionRow(p, owners))]);
  const people = holders.length === 0
    ? "no holder has published a record\n"
    : table([
        ["holder", "pool", "wants", "weight", "reserve", "fair share", "held", "rate/interval"],
        ...holders.map((h) => [h.holderId, h.pool ?? "-", String(h.wants), String(h.weight), String(h.reserve), String(h.fairShare), String(h.held.length), String(+h.rate.toFixed(2))]),
      ]);
  return `${resource} on ${where}: epoch ${stored.epoch}, ${describePlan(stored.plan)}\n${grace}${held} of ${stored.plan.partitions} partitions held\n\n${partitions}\n${people}`;
}

function partitionRow(p: PartitionState, owners: readonly (string | null)[]): string[] {
  return [
    String(p.partition),
    p.pool ?? owners[p.partition] ?? "shared",
    p.holderId ?? "-",
    p.holderId === null ? "-" : p.expiresInMs === null ? "unknown" : `${(p.expiresInMs / 1000).toFixed(1)} s`,
    p.fencingToken === null ? "-" : String(p.fencingToken),
    p.epoch === null ? "-" : String(p.epoch),
  ];
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return `${rows.map((r) => r.map((cell, i) => cell.padEnd(widths[i]!)).join("  ").trimEnd()).join("\n")}\n`;
}
