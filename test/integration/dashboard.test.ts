/**
 * The `dashboard` command in a real browser: four worker processes (three shared, one of a pool)
 * share one quota through a redis-server started here (with a password), the dashboard runs as its
 * own process, and headless Chromium (Debian's package, driven by playwright-core) loads the page.
 * What the page shows is compared with `status --json` read at about the same moment; a worker is
 * killed and its partitions are seen going to the others on the page without a reload; nothing the
 * server sends contains the backend's address or password; an outage shows and passes; SIGTERM
 * stops it with status 0. A screenshot goes to test-output/dashboard/ (UPDATE_DOCS_SCREENSHOT=1
 * also writes docs/dashboard.png, the README's picture).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import { copyFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { Redis } from "ioredis";
import type { Page } from "playwright-core";
import { runCli } from "../../src/cli/main.js";
import { createBackend, type BackendSpec } from "../support/backend-spec.js";
import { launchChromium, type Chromium } from "../support/browser.js";
import { precreatePlan } from "../support/precreate-plan.js";
import { startRecorder, type Recorder } from "../support/recorder.js";
import { startRedis, type RedisServer } from "../support/servers/redis.js";
import { startWorkers, type WorkerGroup, type WorkerHandle } from "../support/workers.js";

// The server is this test's own unless REDIS_URL names a shared one; then the name must be unique.
const RESOURCE = process.env.REDIS_URL === undefined ? "orders-db" : `dash-${randomUUID().slice(0, 8)}`;
const LEASE_TTL_MS = 2_000;
const PLAN = { limit: 120, intervalMs: 1000, partitions: 12, pools: { ingest: 2 }, leaseTtlMs: LEASE_TTL_MS, jitterMs: 20 } as const;
const OUTPUT = join(process.cwd(), "test-output", "dashboard");
const SCREENSHOT = join(OUTPUT, "dashboard.png");

let redis: RedisServer;
let password: string | null;
let backendUrl: string;
let recorder: Recorder;
let shared: WorkerGroup | null = null;
let ingest: WorkerGroup | null = null;
let dashboard: DashboardProcess | null = null;
let browser: Chromium | null = null;
let page: Page;
/** Script errors and console errors or warnings of the page (a CSP violation is one). */
const pageErrors: string[] = [];
const started = performance.now();

/** The dashboard command as a child process, as a user runs it. */
interface DashboardProcess {
  readonly child: ChildProcess;
  readonly url: string;
  stdout(): string;
  stderr(): string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

async function startDashboard(...args: string[]): Promise<DashboardProcess> {
  const child = spawn(process.execPath, ["--import", "tsx", "src/cli/main.ts", "dashboard", ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout!.on("data", (chunk: Buffer) => (out += chunk.toString()));
  child.stderr!.on("data", (chunk: Buffer) => (err += chunk.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the dashboard printed no address within 30 s; stderr: ${err}`)), 30_000);
    const check = () => {
      const line = out.split("\n").find((l) => l.startsWith("{"));
      if (line === undefined) return;
      clearTimeout(timer);
      resolve((JSON.parse(line) as { url: string }).url);
    };
    child.stdout!.on("data", check);
    void exited.then(({ code }) => reject(new Error(`the dashboard exited with ${code}: ${err}`)));
  });
  return { child, url, stdout: () => out, stderr: () => err, exited };
}

interface StatusJson {
  plan: { limit: number; intervalMs: number; partitions: number; pools: Record<string, number>; slicesPerInterval: number; leaseTtlMs: number; jitterMs: number; driftFactor: number };
  epoch: number;
  partitions: { partition: number; pool: string | null; holderId: string | null }[];
  holders: { holderId: string; pool: string | null; wants: number; weight: number; reserve: number; held: number[]; rate: number; fairShare: number }[];
}

/** `status --json`, run through the CLI's own entry point in this process (the nearest moment to the page's reading). */
async function status(): Promise<StatusJson> {
  let out = "";
  let err = "";
  const sink = (append: (t: string) => void) => ({ write: (chunk: string) => (append(chunk), true) }) as unknown as NodeJS.WritableStream;
  const code = await runCli(["status", RESOURCE, "--backend", backendUrl, "--json"], sink((t) => (out += t)), sink((t) => (err += t)));
  if (code !== 0) throw new Error(`status exited with ${code}: ${err}`);
  return JSON.parse(out) as StatusJson;
}

interface PageView {
  epoch: string;
  plan: Record<string, string>;
  holders: { key: string; holderId: string; pool: string; wants: string; weight: string; reserve: string; fairShare: string; leases: string; held: string; rate: string }[];
  cells: { index: string; key: string; pool: string; left: string }[];
  changes: { kind: string; text: string }[];
  connection: string;
  /** The error banner's text, "" while it is hidden. */
  error: string;
}

// Runs in the page: what a reader sees, as text (a string, so no DOM types are needed here).
const READ_PAGE = `(() => {
  const text = (node) => (node ? node.textContent.trim() : "");
  const field = (row, name) => text(row.querySelector('[data-field="' + name + '"]'));
  return {
    epoch: text(document.getElementById("epoch")),
    plan: Object.fromEntries([...document.querySelectorAll("#plan [data-field]")].map((d) => [d.getAttribute("data-field"), text(d.querySelector("dd"))])),
    holders: [...document.querySelectorAll("#holders tbody tr")].map((row) => ({
      key: field(row, "key"), holderId: field(row, "holderId"), pool: field(row, "pool"), wants: field(row, "wants"), weight: field(row, "weight"),
      reserve: field(row, "reserve"), fairShare: field(row, "fairShare"), leases: field(row, "leases"), held: field(row, "held"), rate: field(row, "rate"),
    })),
    cells: [...document.querySelectorAll("#grid .cell")].map((c) => ({ index: text(c.querySelector(".index")), key: text(c.querySelector(".key")), pool: text(c.querySelector(".pool")), left: text(c.querySelector(".left")) })),
    changes: [...document.querySelectorAll("#changes li")].map((li) => ({ kind: li.getAttribute("data-kind"), text: text(li) })),
    connection: text(document.getElementById("connection")),
    error: document.getElementById("error").hidden ? "" : text(document.getElementById("error")),
  };
})()`;

function readPage(): Promise<PageView> {
  return page.evaluate(READ_PAGE) as Promise<PageView>;
}

/**
 * Reads the page every 100 ms until `predicate` holds (polled from here: the page's
 * Content-Security-Policy forbids the string evaluation `page.waitForFunction` would use).
 */
async function waitForPage(predicate: (view: PageView) => boolean, timeoutMs: number, what: string): Promise<PageView> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const view = await readPage();
    if (predicate(view)) return view;
    if (performance.now() > deadline) throw new Error(`${what}: not shown within ${timeoutMs} ms; the page shows ${JSON.stringify(view)}`);
    await sleep(100);
  }
}

/** What the page should show for a `status --json` reading, in the page's words. */
function expectedFrom(s: StatusJson) {
  const held = new Map<string, number>();
  for (const p of s.partitions) if (p.holderId !== null) held.set(p.holderId, (held.get(p.holderId) ?? 0) + 1);
  return {
    epoch: String(s.epoch),
    plan: {
      limit: `${s.plan.limit} per ${s.plan.intervalMs} ms`,
      partitions: `${s.plan.partitions} × ${s.plan.limit / s.plan.partitions}`,
      pools: Object.entries(s.plan.pools).map(([name, n]) => `${name} ${n}`).join(", ") || "none",
      slicesPerInterval: String(s.plan.slicesPerInterval),
      leaseTtlMs: `${s.plan.leaseTtlMs} ms`,
      jitterMs: `${s.plan.jitterMs} ms`,
      driftFactor: String(s.plan.driftFactor),
    },
    holders: s.holders
      .map((h) => ({
        holderId: h.holderId, pool: h.pool ?? "–", wants: String(h.wants), weight: String(h.weight), reserve: String(h.reserve),
        fairShare: String(h.fairShare), leases: String(held.get(h.holderId) ?? 0), held: String(h.held.length),
      }))
      .sort((a, b) => (a.holderId < b.holderId ? -1 : 1)),
    gridHeld: Object.fromEntries([...held].sort()),
    gridPools: s.partitions.map((p) => p.pool ?? ""),
  };
}

/** The same from the page: the grid's letters resolved through the holders table's key column. */
function shownOn(v: PageView): ReturnType<typeof expectedFrom> {
  const idByKey = new Map(v.holders.map((h) => [h.key, h.holderId]));
  const held = new Map<string, number>();
  for (const c of v.cells) if (c.key !== "") held.set(idByKey.get(c.key) ?? `unlisted ${c.key}`, (held.get(idByKey.get(c.key) ?? `unlisted ${c.key}`) ?? 0) + 1);
  return {
    epoch: v.epoch,
    plan: v.plan as ReturnType<typeof expectedFrom>["plan"],
    holders: v.holders
      .map(({ holderId, pool, wants, weight, reserve, fairShare, leases, held: h }) => ({ holderId, pool, wants, weight, reserve, fairShare, leases, held: h }))
      .sort((a, b) => (a.holderId < b.holderId ? -1 : 1)),
    gridHeld: Object.fromEntries([...held].sort()),
    gridPools: v.cells.map((c) => c.pool),
  };
}

/**
 * Reads `status --json` and the page right after it until both say the same (at most `tries`
 * times, 300 ms apart): a lease can move between the two reads, and the page shows the reading of
 * up to one poll interval ago. Returns both of the last attempt.
 */
async function agreeingReads(tries = 8): Promise<{ shown: ReturnType<typeof expectedFrom>; expected: ReturnType<typeof expectedFrom>; view: PageView; json: StatusJson; attempts: number }> {
  let last: Awaited<ReturnType<typeof agreeingReads>> | undefined;
  for (let attempt = 1; attempt <= tries; attempt++) {
    const json = await status();
    const view = await readPage();
    last = { shown: shownOn(view), expected: expectedFrom(json), view, json, attempts: attempt };
    if (JSON.stringify(last.shown) === JSON.stringify(last.expected)) return last;
    await sleep(300);
  }
  return last!;
}

/** Resolves once the dashboard at `url` has read the resource once. */
async function waitForReading(url: string): Promise<void> {
  const deadline = performance.now() + 10_000;
  while ((await (await fetch(`${url}state.json`)).json()) === null) {
    if (performance.now() > deadline) throw new Error("the dashboard did not read the resource within 10 s");
    await sleep(50);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function holderOf(worker: WorkerHandle): string {
  return `${worker.id}-${worker.pid}`;
}

beforeAll(async () => {
  const launching = launchChromium({ viewport: { width: 1200, height: 900 } });
  launching.catch(() => undefined);
  redis = await startRedis();
  password = null;
  backendUrl = redis.url;
  if (process.env.REDIS_URL === undefined) {
    // A server of our own: give it a password, so the test can show the page never reveals one.
    password = `pw-${randomUUID()}`;
    const admin = new Redis(redis.url, { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 1 });
    await admin.connect();
    await admin.config("SET", "requirepass", password);
    admin.disconnect();
    backendUrl = `redis://:${password}@127.0.0.1:${redis.port}`;
  }
  const spec: BackendSpec = { kind: "redis", url: backendUrl };
  const built = await createBackend(spec);
  try {
    await precreatePlan(built.backend, RESOURCE, PLAN);
  } finally {
    await built.close();
  }
  recorder = await startRecorder({ raisePriority: false });
  // The dashboard reads the resource before the workers start, so its log shows them arrive.
  // Calls bounded at 1 s (instead of 5), so a paused server shows on the page soon.
  dashboard = await startDashboard(RESOURCE, "--backend", backendUrl, "--port", "0", "--json", "--timeout-ms", "1000");
  await waitForReading(dashboard.url);
  [shared, ingest] = await Promise.all([
    startWorkers(3, spec, { limiter: { resource: RESOURCE, ...PLAN }, targetUrl: recorder.url, concurrency: 4, raisePriority: false, idPrefix: "w" }),
    startWorkers(1, spec, { limiter: { resource: RESOURCE, ...PLAN, pool: "ingest", weight: 2, reserve: 1 }, targetUrl: recorder.url, concurrency: 4, raisePriority: false, idPrefix: "ingest-" }),
  ]);
  browser = await launching;
  page = await browser.context.newPage();
  page.on("pageerror", (error) => pageErrors.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error" || message.type() === "warning") pageErrors.push(`console ${message.type()}: ${message.text()}`);
  });
  await page.goto(dashboard.url);
  const all = [...shared.workers, ...ingest.workers];
  const total = () => all.reduce((sum, w) => sum + (w.alive ? (w.stats()?.limiter.heldPartitions ?? 0) : 0), 0);
  await Promise.race([shared.waitFor(() => total() === PLAN.partitions, 30_000, "holding every partition"), ingest.waitFor(() => total() === PLAN.partitions, 30_000, "holding every partition")]);
  const allHeldAt = performance.now();
  // The first worker up takes everything; wait until each holds its fair share (what the page should then show).
  const balanced = () => all.every((w) => w.stats() !== null && w.stats()!.limiter.heldPartitions === w.stats()!.limiter.fairShare && w.stats()!.limiter.holders === all.length);
  await Promise.race([shared.waitFor(balanced, 30_000, "every worker at its fair share"), ingest.waitFor(balanced, 30_000, "every worker at its fair share")]);
  process.stdout.write(`dashboard test: set up in ${((performance.now() - started) / 1000).toFixed(1)} s (fair shares reached ${((performance.now() - allHeldAt) / 1000).toFixed(1)} s after every partition was held)\n`);
}, 90_000);

afterAll(async () => {
  if (dashboard && dashboard.child.exitCode === null && dashboard.child.signalCode === null) dashboard.child.kill("SIGKILL");
  await browser?.close();
  await Promise.all([shared?.stop(), ingest?.stop()]);
  await recorder?.stop();
  await redis?.stop();
  process.stdout.write(`dashboard test: ${((performance.now() - started) / 1000).toFixed(1)} s in all\n`);
});

describe("dashboard: a live page of a resource shared by four processes", () => {
  test("shows the plan, its epoch, every holder's share and held partitions as status --json does", async () => {
    const { shown, expected, view, json, attempts } = await agreeingReads();
    expect(shown).toEqual(expected);
    process.stdout.write(`dashboard test: page and status --json agreed on attempt ${attempts}; held ${JSON.stringify(expected.gridHeld)}, fair shares ${JSON.stringify(Object.fromEntries(json.holders.map((h) => [h.holderId, h.fairShare])))}\n`);
    expect(json.holders).toHaveLength(4);
    expect(view.connection).toBe("live");
    expect(pageErrors).toEqual([]);
    // Every partition is held, each with its time left, pools as the plan reserves them.
    expect(view.cells).toHaveLength(PLAN.partitions);
    for (const c of view.cells) expect(c.left).toMatch(/^\d+\.\d s left$/);
    expect(view.cells.map((c) => c.pool)).toEqual(["ingest", "ingest", ...Array<string>(10).fill("")]);
    // The admitted rate each limiter publishes is on the page.
    for (const h of view.holders) expect(Number(h.rate)).toBeGreaterThanOrEqual(0);
    // The log saw the workers take their partitions.
    expect(view.changes.some((c) => c.kind === "taken")).toBe(true);
    expect(view.changes.filter((c) => c.kind === "holder-joined")).toHaveLength(4);
  });

  test("shows a killed worker's partitions going to the others as it happens, without a reload", async () => {
    const before = await readPage();
    const victimRow = [...before.holders].sort((a, b) => Number(b.held) - Number(a.held))[0]!;
    const victim = [...shared!.workers, ...ingest!.workers].find((w) => holderOf(w) === victimRow.holderId)!;
    expect(victim).toBeDefined();
    const victimPartitions = before.cells.filter((c) => c.key === victimRow.key).map((c) => Number(c.index.slice(1)));
    expect(victimPartitions.length).toBeGreaterThan(0);
    await page.evaluate("window.__sameDocument = true");

    const killedAt = performance.now();
    victim.kill("SIGKILL");
    // Every cell held by someone else: the victim's leases expired and the survivors took them.
    await waitForPage((v) => v.cells.every((c) => c.key !== "" && c.key !== victimRow.key), LEASE_TTL_MS + 8_000, "every partition shown with another holder");
    const movedMs = performance.now() - killedAt;
    await waitForPage((v) => v.holders.every((h) => h.holderId !== victimRow.holderId), LEASE_TTL_MS + 8_000, "the killed holder's row gone");
    process.stdout.write(`dashboard test: the page showed every partition of ${victimRow.holderId} (${victimPartitions.join(", ")}) with another holder ${movedMs.toFixed(0)} ms after the kill\n`);

    const after = await readPage();
    expect(await page.evaluate("window.__sameDocument")).toBe(true);
    const survivors = new Set(after.holders.map((h) => h.key));
    expect(survivors.has(victimRow.key)).toBe(false);
    for (const c of after.cells) expect(survivors.has(c.key)).toBe(true);
    // The log says where each of the victim's partitions went.
    const texts = after.changes.map((c) => c.text);
    for (const p of victimPartitions) {
      const left = texts.some((t) => t.includes(`partition ${p} moved from ${victimRow.holderId} to `) || t.includes(`partition ${p} freed by ${victimRow.holderId}`));
      expect({ partition: p, left }).toEqual({ partition: p, left: true });
    }
    expect(texts.some((t) => t.endsWith(`holder ${victimRow.holderId} left`))).toBe(true);

    // And the page agrees with status --json again: three holders, the fair shares recomputed.
    const { shown, expected } = await agreeingReads();
    expect(shown).toEqual(expected);
    expect(shown.holders).toHaveLength(3);
    expect(pageErrors).toEqual([]);
    // For the picture: once the survivors' records name their new partitions and they admit at the new pace.
    await waitForPage((v) => v.holders.every((h) => h.held === h.leases && Number(h.rate) > 0), 5_000, "the survivors' records catching up");
    mkdirSync(OUTPUT, { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    if (process.env.UPDATE_DOCS_SCREENSHOT === "1") copyFileSync(SCREENSHOT, join(process.cwd(), "docs", "dashboard.png"));
    process.stdout.write(`dashboard test: screenshot ${SCREENSHOT}\n`);
  });

  test("one reading per interval however many pages listen", async () => {
    const streams = await Promise.all(Array.from({ length: 5 }, () => readStream(`${dashboard!.url}events`, 2_600)));
    const readAts = streams.map((s) => new Set(s.map((m) => (JSON.parse(m) as { snapshot: { readAt: number } }).snapshot.readAt)));
    const all = new Set(readAts.flatMap((s) => [...s]));
    // 2.6 s at 500 ms: the reading on connect plus at most 6 more, for all five pages together.
    expect(all.size).toBeLessThanOrEqual(7);
    for (const s of readAts) expect(s.size).toBeGreaterThanOrEqual(4);
  });

  test("sends neither the backend's address nor its password nor lease tokens", async () => {
    const bodies = await Promise.all(["", "dashboard.js", "dashboard.css", "state.json"].map(async (path) => (await fetch(`${dashboard!.url}${path}`)).text()));
    const stream = (await readStream(`${dashboard!.url}events`, 700)).join("\n");
    const shown = await page.evaluate("document.documentElement.outerHTML + document.body.innerText") as string;
    const everything = [...bodies, stream, shown].join("\n");
    expect(everything).toContain(RESOURCE);
    const secrets = ["127.0.0.1", "redis://", ...(password === null ? [] : [password])];
    for (const secret of secrets) expect({ secret, found: everything.includes(secret) }).toEqual({ secret, found: false });
    // The port alone, as a number of its own (not inside a longer one such as a timestamp).
    expect(everything).not.toMatch(new RegExp(`(?<![\\d.])${redis.port}(?![\\d.])`));
    expect(everything).not.toMatch(/token/i);
    // Nor does the command print the password.
    if (password !== null) expect(`${dashboard!.stdout()}${dashboard!.stderr()}`).not.toContain(password);
    // A page elsewhere cannot read it through DNS rebinding: a foreign Host header is refused.
    const foreign = await fetchWithHost(dashboard!.url, "attacker.example");
    expect(foreign).toBe(403);
  });

  test("says so while the backend does not answer, and carries on when it does", async () => {
    redis.pause();
    let view: PageView;
    try {
      view = await waitForPage((v) => v.error !== "", 5_000, "the outage");
    } finally {
      redis.resume();
    }
    expect(view.error).toMatch(/^The backend is not answering \(.+\); showing the last good reading\.$/);
    if (password !== null) expect(view.error).not.toContain(password);
    expect(view.cells).toHaveLength(PLAN.partitions);
    const back = await waitForPage((v) => v.error === "", 5_000, "the recovery");
    const kinds = back.changes.map((c) => c.kind);
    expect(kinds.indexOf("backend-back")).toBeGreaterThanOrEqual(0);
    expect(kinds.indexOf("backend-back")).toBeLessThan(kinds.indexOf("backend-failing"));
    expect(dashboard!.stderr()).toMatch(/warning: reading .+ failed: .+; trying again every 500 ms\n/);
  });

  test("a port in use is a usage error naming it", async () => {
    const port = new URL(dashboard!.url).port;
    let err = "";
    const sink = (append: (t: string) => void) => ({ write: (chunk: string) => (append(chunk), true) }) as unknown as NodeJS.WritableStream;
    const code = await runCli(["dashboard", RESOURCE, "--backend", backendUrl, "--port", port], sink(() => undefined), sink((t) => (err += t)));
    expect({ code, err }).toEqual({ code: 2, err: `error: cannot listen on 127.0.0.1:${port} (listen EADDRINUSE); choose another --port or --host (--port 0 picks a free port)\nRun with --help for usage.\n` });
  });

  test("stops with status 0 on SIGTERM while a page is connected", async () => {
    const at = performance.now();
    dashboard!.child.kill("SIGTERM");
    const exit = await dashboard!.exited;
    const ms = performance.now() - at;
    expect(exit).toEqual({ code: 0, signal: null });
    expect(ms).toBeLessThan(3_000);
    expect(dashboard!.stderr()).toMatch(/SIGTERM: stopping the dashboard\n$/);
    await waitForPage((v) => v.connection !== "live", 5_000, "the page noticing the server is gone");
    process.stdout.write(`dashboard test: stopped ${ms.toFixed(0)} ms after SIGTERM\n`);
  });
});

/** The `data:` lines of an SSE stream read for `ms`. */
async function readStream(url: string, ms: number): Promise<string[]> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), ms);
  const messages: string[] = [];
  try {
    const res = await fetch(url, { signal: controller.signal });
    const decoder = new TextDecoder();
    let buffer = "";
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buffer += decoder.decode(chunk, { stream: true });
      let end: number;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        for (const line of frame.split("\n")) if (line.startsWith("data: ")) messages.push(line.slice(6));
      }
    }
  } catch (error) {
    if (!controller.signal.aborted) throw error;
  } finally {
    clearTimeout(timer);
  }
  return messages;
}

/** GET `url` with a forged Host header (fetch forbids setting it); resolves the status code. */
async function fetchWithHost(url: string, host: string): Promise<number> {
  const { request } = await import("node:http");
  const target = new URL(url);
  return new Promise((resolve, reject) => {
    const req = request({ host: target.hostname, port: target.port, path: "/", headers: { host } }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.once("error", reject);
    req.end();
  });
}
