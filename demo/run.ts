/**
 * `npm run demo`: the worked example of the Rate Limiting pattern (the seed 004), runnable on a
 * fresh machine after `npm install`. See `--help`.
 */
import { fork, type ChildProcess } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { QueueServiceClient, type QueueClient } from "@azure/storage-queue";
import { oneOf, readCommandLine, UsageError, type OptionSpecs } from "../src/cli/args.js";
import { connectBackend } from "../src/cli/connect-backend.js";
import { PartitionedRateLimiter } from "../src/limiter/partitioned-rate-limiter.js";
import { validatePlan, type PlanInput } from "../src/contract/plan.js";
import { startAzurite, type AzuriteServer } from "../test/support/servers/azurite.js";
import { renderChart, type ChartPanel } from "./chart.js";
import type { Arrival } from "./database.js";
import type { ProcessorConfig, ProgressMessage } from "./processor.js";
import { ProgressView } from "./progress.js";
import { PUBLISHED_COSMOS } from "./published-figures.js";
import { startRemoteDatabase, type RemoteDatabase } from "./remote-database.js";
import { startLeaseServer, type DemoBackend, type DemoLeaseServer } from "./servers.js";
import { formatPublishedComparison, formatTable, summarise, type NaivePass, type RunSummary } from "./summary.js";
import { closeWriter, writeBulk, writeRecord, type DemoRecord } from "./writer.js";

const HELP = `npm run demo -- [options]

The Rate Limiting pattern's worked example, end to end on this machine. Starts Azurite (from
node_modules), a local HTTP "database" that allows at most 500 writes in any sliding second
(429 beyond), an API step that enqueues 10,000 type-A and 5,000 type-B records into two Azure
Storage queues, and job processors A and B as separate processes. Each processor leases
partitions of the quota (5 partitions of 100 writes/s: one reserved for A, one for B, three
shared) and dequeues only what its leases allow. Then the same work the naive way (send as fast
as possible, wait out each 429's Retry-After, send again). Prints both side by side and writes
an SVG chart of the rate per processor against the quota to demo-output/.

Options:
  --backend azure|redis|etcd|redlock  where the leases live (default azure: blob leases on the
                                      same Azurite; the others start local servers like the tests)
  --scenario queues|cosmos            queues (default): the job processors above.
                                      cosmos: the pattern's first example, 10,000 records x 10 RU
                                      against 20,000 RU/s, from one process; the naive run sends
                                      everything at once (bulk requests of 100) and resends the
                                      rejected; printed beside the pattern's published figures
  --json                              print the summary as one JSON object on stdout (progress
                                      goes to stderr)
  --help                              this text

Exit status: 0 when the rate-limited run wrote every record once with no 429 and the database
never saw more than its quota in any window; 1 otherwise or on failure.`;

/** The queues scenario: the seed's numbers, scaled to finish in about a minute. */
const QUEUES = {
  resource: "orders-db",
  // 5 partitions of 100 writes/s: each processor leases "blobs worth 100 requests/s", as in the seed.
  plan: { limit: 500, intervalMs: 1000, partitions: 5, pools: { A: 1, B: 1 } } satisfies PlanInput,
  records: { A: 10_000, B: 5_000 } as Record<string, number>,
  // One queue message is one API call's batch of records; Azurite's queue is too slow for a
  // message per record at these rates, and the seed's processors dequeue records in batches.
  recordsPerMessage: 10,
  leaseTtlMs: 15_000, // Azure's minimum lease.
  slicesPerInterval: 5, // the seed's "20 every 200 ms instead of 100 per second"
  jitterMs: 0, // set below
};

/** The cosmos scenario: the pattern's own example, 10,000 records of 10 RU against 20,000 RU/s. */
const COSMOS = {
  resource: "cosmos-ingest",
  plan: { limit: PUBLISHED_COSMOS.ruPerSecond, intervalMs: 1000, partitions: 10, pools: {} } satisfies PlanInput,
  records: PUBLISHED_COSMOS.records,
  ruPerRecord: PUBLISHED_COSMOS.ruPerRecord,
  /** Operations per bulk request of the naive run (Cosmos DB's bulk mode sends up to 100). */
  bulkSize: 100,
  leaseTtlMs: 15_000,
  // Bursts of 100 requests every ~52 ms rather than 200 every ~100 ms: less queueing in the sender.
  slicesPerInterval: 20,
  jitterMs: 0, // set below
};

/**
 * The spread of admission-to-arrival delays the pace absorbs (docs/guarantee.md, assumption 2 and rule P2). The demo runs
 * senders, database and servers on one (often busy) machine, where a burst of requests can take
 * tens of ms to get through the event loops; 100 ms costs 10% of the quota and keeps arrivals,
 * not just admissions, within the quota. A real deployment measures its own spread.
 *
 * The cosmos scenario once ran with 50 ms: in CI, after half an hour of other tests, bursts of 100
 * writes spread over more than that on their way to the database and 31 of 10,000 were refused.
 */
const DEMO_JITTER_MS = Number(process.env.DEMO_JITTER_MS ?? 100);
QUEUES.jitterMs = DEMO_JITTER_MS;
COSMOS.jitterMs = DEMO_JITTER_MS;

interface Args {
  backend: DemoBackend;
  scenario: "queues" | "cosmos";
  json: boolean;
}

const DEMO_OPTIONS = {
  backend: { type: "string", value: "azure|redis|etcd|redlock", help: "where the leases live" },
  scenario: { type: "string", value: "queues|cosmos", help: "which worked example" },
  json: { type: "boolean", help: "summary as JSON on stdout" },
  help: { type: "boolean", short: "h", help: "the help text" },
} as const satisfies OptionSpecs;

function parseDemoArgs(argv: readonly string[]): Args | "help" {
  const line = readCommandLine(argv, DEMO_OPTIONS, "npm run demo");
  if (line.flag("help")) return "help";
  if (line.positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(line.positionals[0])}`);
  const backend = line.string("backend");
  const scenario = line.string("scenario");
  return {
    backend: backend === undefined ? "azure" : oneOf<DemoBackend>("backend", backend, ["azure", "redis", "etcd", "redlock"]),
    scenario: scenario === undefined ? "queues" : oneOf("scenario", scenario, ["queues", "cosmos"] as const),
    json: line.flag("json"),
  };
}

/** Everything started, stopped in reverse order exactly once: at the end, on failure, on Ctrl-C. */
const cleanups: (() => Promise<unknown>)[] = [];
let cleaning: Promise<void> | null = null;
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    for (const fn of cleanups.reverse()) await fn().catch(() => undefined);
    closeWriter();
  })();
  return cleaning;
}

const here = dirname(fileURLToPath(import.meta.url));
let log: NodeJS.WriteStream = process.stdout;
const say = (text: string) => log.write(`${text}\n`);

async function main(): Promise<number> {
  const parsed = parseDemoArgs(process.argv.slice(2));
  if (parsed === "help") {
    process.stdout.write(`${HELP}\n`);
    return 0;
  }
  const args = parsed;
  if (args.json) log = process.stderr;
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, () => {
      say(`\n${signal}: stopping everything the demo started...`);
      void cleanup().finally(() => process.exit(130));
    });
  }

  const needsAzurite = args.scenario === "queues" || args.backend === "azure";
  let azurite: AzuriteServer | null = null;
  if (needsAzurite) {
    say("Starting Azurite (blob + queue) from node_modules...");
    azurite = await startAzurite();
    cleanups.push(() => azurite!.stop());
  }
  say(`Starting the lease backend (${args.backend})...`);
  const leases = await startLeaseServer(args.backend, azurite ?? (null as unknown as AzuriteServer));
  cleanups.push(() => leases.stop());
  say(`  ${leases.description}`);

  const result = args.scenario === "queues" ? await queuesScenario(args, azurite!, leases) : await cosmosScenario(args, leases);
  const outDir = resolve(here, "..", "demo-output");
  mkdirSync(outDir, { recursive: true });
  const chartPath = join(outDir, `${args.scenario}-${args.backend}.svg`);
  writeFileSync(chartPath, result.svg);

  const failures = checkLimited(result.limited, result.expectedRecords);
  if (args.json) {
    process.stdout.write(`${JSON.stringify({ scenario: args.scenario, backend: args.backend, quota: result.quota, ...result.extra, limited: result.limited, naive: result.naive, chart: chartPath, ok: failures.length === 0, failures })}\n`);
  } else {
    say("");
    say(formatTable(result.limited, result.naive));
    say("");
    if (result.naivePasses) {
      say("The pattern's published figures beside this run:");
      say(formatPublishedComparison(result.limited, result.naive, result.naivePasses));
      say("");
    }
    say(`Chart: ${chartPath}`);
  }
  if (failures.length > 0) {
    process.stderr.write(`demo: the rate-limited run broke its promise:\n  ${failures.join("\n  ")}\n`);
    return 1;
  }
  return 0;
}

/** The promise the limited run must keep; each broken part as a sentence. */
function checkLimited(s: RunSummary, expected: number): string[] {
  const failures: string[] = [];
  if (s.recordsWritten !== expected) failures.push(`${s.recordsWritten} of ${expected} records written`);
  if (s.duplicateWrites !== 0) failures.push(`${s.duplicateWrites} records written twice`);
  if (s.rejected429 !== 0) failures.push(`${s.rejected429} requests answered 429`);
  if (s.audit.overLimitWindows !== 0) failures.push(`${s.audit.overLimitWindows} sliding windows over the quota (worst ${s.audit.worstWindowRatio}x)`);
  return failures;
}

interface ScenarioResult {
  limited: RunSummary;
  naive: RunSummary;
  /** The naive run pass by pass (cosmos only). */
  naivePasses?: NaivePass[];
  svg: string;
  expectedRecords: number;
  quota: PlanInput;
  extra: Record<string, unknown>;
}

async function queuesScenario(_args: Args, azurite: AzuriteServer, leases: DemoLeaseServer): Promise<ScenarioResult> {
  const plan = validatePlan({ ...QUEUES.plan, leaseTtlMs: QUEUES.leaseTtlMs, slicesPerInterval: QUEUES.slicesPerInterval, jitterMs: QUEUES.jitterMs });
  const db = await startRemoteDatabase(plan);
  cleanups.push(() => db.stop());
  const queues = QueueServiceClient.fromConnectionString(azurite.connectionString, { retryOptions: { maxTries: 3, tryTimeoutInMs: 10_000 } });
  const total = Object.values(QUEUES.records).reduce((a, b) => a + b, 0);
  say(`Quota: ${plan.limit} writes/s in sliding windows; ${plan.partitions} partitions of ${plan.limit / plan.partitions}/s (pool A: 1, pool B: 1, shared: 3).`);

  // The demo just started this backend, so no one can hold a lease it forgot: no grace period.
  if (leases.fresh) {
    const connected = await connectBackend(leases.spec);
    await connected.backend.ensurePlan(QUEUES.resource, plan, { history: "fresh", timeoutMs: 10_000 });
    await connected.close();
  }

  const panels: ChartPanel[] = [];
  const runs: RunSummary[] = [];
  for (const mode of ["limited", "naive"] as const) {
    await db.reset();
    say("");
    say(mode === "limited" ? "Run 1: rate-limited job processors (leases + local pacing)" : "Run 2: naive job processors (as fast as possible, retry on 429)");
    const names: Record<string, string> = {};
    for (const [type, count] of Object.entries(QUEUES.records)) {
      const queue = queues.getQueueClient(`${mode}-records-${type.toLowerCase()}`);
      await queue.create();
      names[type] = queue.name;
      say(`  API: enqueueing ${count} type-${type} records (${count / QUEUES.recordsPerMessage} messages of ${QUEUES.recordsPerMessage}) into ${queue.name}...`);
      await enqueue(queue, type, count);
    }
    const startT = performance.now();
    await runProcessors(mode, azurite, leases, db, names, startT);
    const arrivals = await db.arrivals();
    runs.push(summarise(mode, arrivals, (await db.state()).written, plan, total));
    panels.push({
      title: mode === "limited" ? `Rate-limited: processors A and B on ${leases.spec.kind} leases` : "Naive: as fast as possible, retry on 429",
      arrivals,
      processors: Object.keys(QUEUES.records),
      startT: arrivals[0]?.t ?? 0,
      showSent: true,
    });
  }
  return {
    limited: runs[0]!,
    naive: runs[1]!,
    svg: renderChart(panels, plan.limit, plan.intervalMs),
    expectedRecords: total,
    quota: plan,
    extra: { records: QUEUES.records, recordsPerMessage: QUEUES.recordsPerMessage, leaseTtlMs: QUEUES.leaseTtlMs, slicesPerInterval: QUEUES.slicesPerInterval, jitterMs: QUEUES.jitterMs },
  };
}

/** The API step: batches of records into the queue, 32 sends at a time. */
async function enqueue(queue: QueueClient, type: string, count: number): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const from = next;
      next += QUEUES.recordsPerMessage;
      const records: DemoRecord[] = [];
      for (let i = from; i < Math.min(from + QUEUES.recordsPerMessage, count); i++) records.push({ id: `${type}-${i}`, type });
      await queue.sendMessage(JSON.stringify({ records }));
    }
  };
  await Promise.all(Array.from({ length: 32 }, worker));
}

async function runProcessors(
  mode: "limited" | "naive",
  azurite: AzuriteServer,
  leases: DemoLeaseServer,
  db: RemoteDatabase,
  queueNames: Record<string, string>,
  startT: number,
): Promise<void> {
  const children = new Map<string, ChildProcess>();
  const progress = new Map<string, ProgressMessage>();
  const stopped = new Set<string>();
  const view = new ProgressView(log);
  let failure: Error | null = null;
  let wake: () => void = () => undefined;

  for (const role of Object.keys(QUEUES.records)) {
    const config: ProcessorConfig = {
      role, mode, backend: leases.spec, queueConnectionString: azurite.connectionString, queueName: queueNames[role]!, dbUrl: db.url,
      resource: QUEUES.resource, plan: QUEUES.plan, leaseTtlMs: QUEUES.leaseTtlMs, slicesPerInterval: QUEUES.slicesPerInterval, jitterMs: QUEUES.jitterMs,
    };
    // A separate OS process per job processor, as in the seed: they share nothing but the backend.
    const child = fork(join(here, "processor.ts"), [JSON.stringify(config)], { execArgv: ["--import", "tsx"], stdio: ["ignore", "inherit", "inherit", "ipc"] });
    children.set(role, child);
    const kill = async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGKILL");
      await exited;
    };
    cleanups.push(kill);
    child.on("message", (m: ProgressMessage | { type: string; role: string; text?: string }) => {
      if (m.type === "progress") progress.set(role, m as ProgressMessage);
      else if (m.type === "log") say(`  [${role}] ${(m as { text: string }).text}`);
      else if (m.type === "fatal") {
        failure ??= new Error(`processor ${role} failed: ${(m as { text: string }).text}`);
        wake();
      } else if (m.type === "stopped") {
        stopped.add(role);
        wake();
      }
    });
    child.once("exit", (code, signal) => {
      if (!stopped.has(role)) failure ??= new Error(`processor ${role} exited unexpectedly (code ${code}, signal ${signal})`);
      wake();
    });
  }

  const deadline = startT + 240_000;
  const finishedAt = new Map<string, number>();
  for (;;) {
    await new Promise<void>((r) => {
      const timer = setTimeout(r, 1000);
      wake = () => {
        clearTimeout(timer);
        r();
      };
    });
    wake = () => undefined;
    if (failure) throw failure;
    const now = performance.now();
    const state = await db.state();
    const written = state.written.byType;
    const lines: string[] = [];
    for (const [role, total] of Object.entries(QUEUES.records)) {
      const p = progress.get(role);
      const rate = state.unitsLastSecond[role] ?? 0;
      const rejected = state.rejected[role] ?? 0;
      const done = written[role] ?? 0;
      if (done >= total && !finishedAt.has(role)) {
        finishedAt.set(role, now);
        children.get(role)!.send({ type: "stop" });
      }
      const held = p?.heldPartitions === null || p === undefined || finishedAt.has(role) ? "" : `held ${p.heldPartitions} [${p.partitions.join(",")}] = ${p.capacity}/s  `;
      lines.push(
        `${role}: ${held}rate ${String(rate).padStart(4)}/s  written ${String(done).padStart(5)}/${total}  queue ${String(p?.queueDepth ?? "?").padStart(5)} msgs  429s ${rejected}${finishedAt.has(role) ? "  (done)" : ""}`,
      );
    }
    view.update((now - startT) / 1000, lines);
    if (stopped.size === children.size) break;
    if (now > deadline) throw new Error(`the ${mode} run did not finish within 240 s; written so far: ${JSON.stringify(written)}`);
  }
  view.done();
  await Promise.all([...children.values()].map((c) => (c.exitCode !== null || c.signalCode !== null ? null : new Promise((r) => c.once("exit", r)))));
}

async function cosmosScenario(_args: Args, leases: DemoLeaseServer): Promise<ScenarioResult> {
  const plan = validatePlan({ ...COSMOS.plan, leaseTtlMs: COSMOS.leaseTtlMs, slicesPerInterval: COSMOS.slicesPerInterval, jitterMs: COSMOS.jitterMs });
  const db = await startRemoteDatabase(plan);
  cleanups.push(() => db.stop());
  const units = COSMOS.records * COSMOS.ruPerRecord;
  say(`Cosmos DB stand-in: ${plan.limit} RU/s; ${COSMOS.records} records x ${COSMOS.ruPerRecord} RU = ${units} RU (ideal ${units / plan.limit} s).`);
  const records = Array.from({ length: COSMOS.records }, (_, i): DemoRecord => ({ id: `rec-${i}`, type: "cosmos" }));

  // Rate-limited: one process, leases on the chosen backend, every write admitted first.
  const connected = await connectBackend(leases.spec);
  cleanups.push(() => connected.close());
  // The demo just started this backend, so no one can hold a lease it forgot: no grace period.
  if (leases.fresh) await connected.backend.ensurePlan(COSMOS.resource, plan, { history: "fresh", timeoutMs: 10_000 });
  const limiter = new PartitionedRateLimiter({
    resource: COSMOS.resource, ...plan, backend: connected.backend,
    // Reserved capacity: the job knows it needs the whole quota, so it takes it before starting.
    minPartitions: plan.partitions,
  });
  cleanups.push(() => limiter.close());
  const warmupStart = performance.now();
  say("Run 1: rate-limited (taking the leases first)...");
  while (limiter.capacity < plan.limit) {
    if (performance.now() - warmupStart > 60_000) throw new Error(`could not lease the whole quota within 60 s (holding ${limiter.capacity} RU/s)`);
    await new Promise((r) => setTimeout(r, 20));
  }
  const leaseWarmupMs = Math.round(performance.now() - warmupStart);
  say(`  leased ${plan.partitions} partitions in ${leaseWarmupMs} ms; sending...`);
  // 100 senders, each admitting its next record only once its last write returned: an admitted
  // request is sent at once instead of waiting behind others for a socket, which would delay
  // some arrivals more than others (the pace absorbs only jitterMs of such spread).
  let nextRecord = 0;
  await Promise.all(
    Array.from({ length: 100 }, async () => {
      while (nextRecord < records.length) await sendLimited(records[nextRecord++]!);
    }),
  );
  async function sendLimited(record: DemoRecord): Promise<void> {
    {
      for (;;) {
        await limiter.acquire(COSMOS.ruPerRecord);
        const result = await writeRecord(db.url, record, "cosmos", COSMOS.ruPerRecord);
        if (result.status === 201) return;
        if (result.status !== 429) throw new Error(`rate-limited write answered HTTP ${result.status}`);
        // Never expected; counted in the summary (and failing the demo) rather than hidden.
        limiter.reportThrottle({ retryAfterMs: result.retryAfterMs ?? 1000 });
      }
    }
  }
  await limiter.close();
  const limitedArrivals = await db.arrivals();
  const limited = summarise("limited", limitedArrivals, (await db.state()).written, plan, units);
  const limitedPanel: ChartPanel = { title: `Rate-limited (${leases.spec.kind} leases)`, arrivals: limitedArrivals, processors: ["cosmos"], startT: limitedArrivals[0]?.t ?? 0, showSent: true };
  say(`  ${limited.requestsSent} requests, ${limited.rejected429} rejected, ${limited.timeToFinishS} s`);

  // Naive, as the pattern describes it: send every record at once, then, once the service's
  // Retry-After has passed, resend all that were rejected, until none is. "At once" is Cosmos DB's
  // bulk mode (up to 100 operations per request, each throttled on its own): 100 requests reach
  // the service well within a second, so each pass gets exactly what one second's quota allows.
  // One record a request instead, a pass of 10,000 takes longer than a second to arrive on a busy
  // machine, and the window sliding meanwhile accepts more than the pattern's 2,000 per pass.
  await db.reset();
  say(`Run 2: naive (send all at once in bulk requests of ${COSMOS.bulkSize}, resend the rejected after Retry-After)...`);
  let pending = records;
  const passes: { sent: number; rejected: number }[] = [];
  while (pending.length > 0) {
    const batches = Array.from({ length: Math.ceil(pending.length / COSMOS.bulkSize) }, (_, i) => pending.slice(i * COSMOS.bulkSize, (i + 1) * COSMOS.bulkSize));
    const results = await Promise.all(batches.map((batch) => writeBulk(db.url, batch, "cosmos", COSMOS.ruPerRecord).then((res) => ({ batch, res }))));
    const rejected = results.flatMap(({ batch, res }) => batch.filter((_, i) => res.statuses[i] === 429));
    const retryAfterMs = Math.max(0, ...results.map(({ res }) => res.retryAfterMs ?? 0));
    passes.push({ sent: pending.length, rejected: rejected.length });
    const published = PUBLISHED_COSMOS.passes[passes.length - 1];
    say(`  pass ${passes.length}: sent ${pending.length}, rejected ${rejected.length}${published ? ` (published: ${published.sent}, ${published.rejected})` : " (the published run had 5 passes)"}`);
    pending = rejected;
    if (pending.length > 0) await new Promise((r) => setTimeout(r, retryAfterMs || 1000));
    if (passes.length > 100) throw new Error("the naive run did not finish in 100 passes");
  }
  const naiveArrivals: Arrival[] = await db.arrivals();
  // Passes never overlap (each starts after every answer of the last), so they split the arrivals in order.
  let from = 0;
  const naivePasses: NaivePass[] = passes.map((p) => {
    const slice = naiveArrivals.slice(from, (from += p.sent));
    return { ...p, arrivalSpanMs: Math.round(slice.length > 0 ? slice[slice.length - 1]!.t - slice[0]!.t : 0) };
  });
  const naive = summarise("naive", naiveArrivals, (await db.state()).written, plan, units);
  const naivePanel: ChartPanel = { title: "Naive: send all, retry the rejected", arrivals: naiveArrivals, processors: ["cosmos"], startT: naiveArrivals[0]?.t ?? 0, showSent: true };
  return {
    limited,
    naive,
    svg: renderChart([limitedPanel, naivePanel], plan.limit, plan.intervalMs),
    naivePasses,
    expectedRecords: COSMOS.records,
    quota: plan,
    extra: { records: COSMOS.records, ruPerRecord: COSMOS.ruPerRecord, leaseWarmupMs, naivePasses, published: PUBLISHED_COSMOS },
  };
}

main()
  .then(async (code) => {
    await cleanup();
    process.exit(code);
  })
  .catch(async (error: unknown) => {
    await cleanup();
    const message = error instanceof UsageError ? `${error.message}\n\nnpm run demo -- --help` : ((error as Error)?.message ?? String(error));
    process.stderr.write(`demo failed: ${message}\n`);
    process.exit(error instanceof UsageError ? 2 : 1);
  });
