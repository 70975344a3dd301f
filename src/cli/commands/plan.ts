import { PLAN_DEFAULTS, PLAN_RANGES, planMismatch, samePlan, validatePlan, type Plan, type StoredPlan } from "../../contract/plan.js";
import { numberArgument, positiveNumber, UsageError, wholeNumber, type CommandLine, type OptionSpecs } from "../args.js";
import { EXIT, resourceArgument, withBackend, type Command } from "../command.js";
import { describePlan } from "../format-plan.js";
import { PlanMismatchError } from "../../errors/plan-mismatch-error.js";

const PLAN_OPTIONS = {
  limit: { type: "string", value: "<n>", help: "units allowed in any window of --interval-ms (a positive number)" },
  "interval-ms": { type: "string", value: "<ms>", help: "the quota's window, in milliseconds" },
  partitions: { type: "string", value: "<n>", help: `equal parts the quota is split into (${PLAN_RANGES.partitions.min} to ${PLAN_RANGES.partitions.max})` },
  pool: { type: "string", repeatable: true, value: "<name=n>", help: "partitions reserved for a pool; repeat for more pools" },
  "slices-per-interval": { type: "string", value: "<k>", help: `pacing granularity (default ${PLAN_DEFAULTS.slicesPerInterval}, as the limiter's)` },
  "lease-ttl-ms": { type: "string", value: "<ms>", help: `lease lifetime (default ${PLAN_DEFAULTS.leaseTtlMs}, as the limiter's; at most ${PLAN_RANGES.leaseTtlMs.max})` },
  "jitter-ms": { type: "string", value: "<ms>", help: `request delay spread the pace absorbs (default ${PLAN_DEFAULTS.jitterMs})` },
  "drift-factor": { type: "string", value: "<f>", help: `worst clock-rate difference (default ${PLAN_DEFAULTS.driftFactor})` },
  replace: { type: "boolean", help: "store this plan as the next epoch, replacing the stored one (limiters with followPlan switch to it)" },
  delete: { type: "boolean", help: "delete the stored plan (the quota options are then not needed)" },
  fresh: { type: "boolean", help: "the server is new and never granted a lease on this resource: no grace for a plan stored now" },
} as const satisfies OptionSpecs;

/** `plan <resource> ...`: creates, verifies, replaces or deletes a resource's plan. */
export const planCommand: Command = {
  name: "plan",
  synopsis:
    "plan <resource> --limit <n> --interval-ms <ms> --partitions <n> [--pool name=n ...] [--slices-per-interval k] [--lease-ttl-ms ms] " +
    "[--jitter-ms ms] [--drift-factor f] [--replace | --delete] [--fresh] --backend <address> [--json]",
  description:
    "Creates the plan if none is stored, else verifies it (exit 3 when it differs, naming the fields). A plan stored where " +
    "none was grants no lease for a grace period (the longest lease TTL, 60 s, plus one window), unless the server proves " +
    "it never granted one on this resource or --fresh says so: a backend that lost its state cannot tell a first start " +
    "from a restart that forgot live leases. --replace stores the plan as the next epoch: renewals of older leases are " +
    "refused and nothing is granted until they have expired and one more window has passed, so no window holds " +
    "admissions of both. --delete removes the plan (limiters that run with their own plan store it again).",
  options: PLAN_OPTIONS,
  async run(line, io) {
    const resource = resourceArgument(line, "plan");
    const json = line.flag("json");
    const replace = line.flag("replace");
    const remove = line.flag("delete");
    if (replace && remove) throw new UsageError("--replace and --delete exclude each other");
    // Everything is checked before the network is touched.
    const plan = remove ? null : planFrom(line);
    return withBackend(line, io, async ({ backend, where, timeoutMs }) => {
      // --replace is how an unreadable plan (edited by hand, or written by version 0.1) is
      // repaired, so for it such a plan is no error: it is replaced with no expected epoch.
      let before: StoredPlan | null;
      let unreadable = false;
      try {
        before = await backend.readPlan(resource, { timeoutMs });
      } catch (error) {
        if (!(replace && PlanMismatchError.is(error))) throw error;
        before = null;
        unreadable = true;
        io.err.write(`warning: the stored plan of ${resource} cannot be read (${error.message}); replacing it\n`);
      }
      let outcome: "created" | "verified" | "replaced" | "deleted" | "absent";
      let stored: StoredPlan | null;
      if (remove) {
        outcome = (await backend.deletePlan(resource, { timeoutMs })) ? "deleted" : "absent";
        stored = null;
      } else if (replace) {
        stored = await backend.replacePlan(resource, plan!, before ? { expectedEpoch: before.epoch, timeoutMs } : { timeoutMs });
        outcome = before || unreadable ? "replaced" : "created";
      } else {
        stored = await backend.ensurePlan(resource, plan!, { history: line.flag("fresh") ? "fresh" : "unknown", timeoutMs });
        if (!samePlan(stored.plan, plan!)) throw planMismatch(resource, stored, plan!);
        outcome = before === null ? "created" : "verified";
      }
      const state = await backend.inspect(resource, { timeoutMs });
      const graceMs = state.graceMs;
      if (json) {
        io.out.write(`${JSON.stringify({ resource, backend: backend.name, outcome, plan: stored?.plan ?? null, epoch: stored?.epoch ?? null, previousEpoch: before?.epoch ?? null, graceMs })}\n`);
      } else {
        if (outcome === "deleted") io.out.write(`deleted the plan of ${resource} (epoch ${before?.epoch}) on ${where}\n`);
        else if (outcome === "absent") io.out.write(`no plan was stored for ${resource} on ${where}\n`);
        else io.out.write(`${outcome} plan of ${resource} on ${where}: epoch ${stored!.epoch}, ${describePlan(stored!.plan)}\n`);
        if (graceMs > 0) io.out.write(`no lease is granted for the next ${Math.ceil(graceMs)} ms (${graceReason(outcome)})\n`);
      }
      return EXIT.ok;
    });
  },
};

function graceReason(outcome: string): string {
  switch (outcome) {
    case "replaced":
      return "the older epoch's leases run out first";
    case "deleted":
      return "the deleted plan's leases run out first";
    case "created":
      return "grace of a new plan: the server cannot prove that no forgotten lease is still in use";
    default:
      return "a grace period is running";
  }
}

function planFrom(line: CommandLine): Plan {
  const required = (name: "limit" | "interval-ms" | "partitions"): string => {
    const value = line.string(name);
    if (value === undefined) throw new UsageError(`plan needs --${name}`);
    return value;
  };
  // The plan's own ranges, in words; validatePlan then checks how the fields relate. The limit's
  // upper bound (2^50) is left to validatePlan, so that the message stays "a positive number".
  const limit = positiveNumber("limit", required("limit"));
  const intervalMs = numberArgument("interval-ms", required("interval-ms"), { ...PLAN_RANGES.intervalMs, unit: "milliseconds" });
  const partitions = numberArgument("partitions", required("partitions"), PLAN_RANGES.partitions);
  const pools: Record<string, number> = {};
  for (const entry of line.strings("pool")) {
    const match = /^([^=]+)=(.*)$/.exec(entry);
    if (!match) throw new UsageError(`--pool must look like NAME=COUNT (e.g. --pool ingest=2), got ${JSON.stringify(entry)}`);
    const name = match[1]!;
    if (Object.hasOwn(pools, name)) throw new UsageError(`--pool ${name} was given twice`);
    pools[name] = wholeNumber(`pool ${name}`, match[2]!, { min: 1, max: partitions });
  }
  const optional = (name: string, parse: (text: string) => number): number | undefined => {
    const text = line.string(name);
    return text === undefined ? undefined : parse(text);
  };
  return validatePlan({
    limit,
    intervalMs,
    partitions,
    pools,
    slicesPerInterval: optional("slices-per-interval", (t) => numberArgument("slices-per-interval", t, PLAN_RANGES.slicesPerInterval)),
    leaseTtlMs: optional("lease-ttl-ms", (t) => numberArgument("lease-ttl-ms", t, { ...PLAN_RANGES.leaseTtlMs, unit: "milliseconds" })),
    jitterMs: optional("jitter-ms", (t) => numberArgument("jitter-ms", t, { ...PLAN_RANGES.jitterMs, max: intervalMs, unit: "milliseconds" })),
    driftFactor: optional("drift-factor", (t) => numberArgument("drift-factor", t, PLAN_RANGES.driftFactor)),
  });
}

