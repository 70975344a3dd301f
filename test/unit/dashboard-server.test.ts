import { request } from "node:http";
import { Script } from "node:vm";
import { validatePlan } from "../../src/contract/plan.js";
import { startDashboardServer, type DashboardServer } from "../../src/dashboard/dashboard-server.js";
import { PAGE_HTML } from "../../src/dashboard/page-html.js";
import { PAGE_SCRIPT } from "../../src/dashboard/page-script.js";
import { PAGE_STYLE } from "../../src/dashboard/page-style.js";
import { ResourcePoller } from "../../src/dashboard/resource-poller.js";
import { MemoryLeaseBackend } from "../../src/lease-backends/memory.js";
import { VirtualClock } from "../../src/testing/virtual-clock.js";

// The server on a loopback port; the poller it serves runs on virtual time.

let clock: VirtualClock;
let poller: ResourcePoller;
let server: DashboardServer;

beforeEach(async () => {
  clock = new VirtualClock();
  const backend = new MemoryLeaseBackend({ clock });
  await backend.ensurePlan("r", validatePlan({ limit: 10, intervalMs: 1000, partitions: 2 }), { history: "fresh" });
  poller = new ResourcePoller({ backend, resource: "r", intervalMs: 500, timeoutMs: 1000, clock });
  server = await startDashboardServer({ poller, port: 0 });
});

afterEach(async () => {
  await server.close();
  await poller.close();
});

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function get(path: string, options: { host?: string; method?: string } = {}): Promise<Reply> {
  const url = new URL(path, server.url);
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, path: url.pathname, method: options.method ?? "GET", headers: options.host ? { host: options.host } : {} }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (body += chunk));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.once("error", reject);
    req.end();
  });
}

/** Opens /events and collects its `data:` messages as they come. */
function openStream(): Promise<{ messages: unknown[]; ended: Promise<void>; close(): void }> {
  const url = new URL("events", server.url);
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, path: url.pathname }, (res) => {
      const messages: unknown[] = [];
      let buffer = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        buffer += chunk;
        let end: number;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          for (const line of frame.split("\n")) if (line.startsWith("data: ")) messages.push(JSON.parse(line.slice(6)));
        }
      });
      const ended = new Promise<void>((done) => res.once("end", () => done()));
      expect(res.headers["content-type"]).toBe("text/event-stream; charset=utf-8");
      resolve({ messages, ended, close: () => req.destroy() });
    });
    req.once("error", reject);
    req.end();
  });
}

async function until(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !condition(); i++) await new Promise((r) => setTimeout(r, 5));
  expect(condition()).toBe(true);
}

describe("dashboard server", () => {
  test("listens on 127.0.0.1 by default and serves the page, its script and style with a strict CSP", async () => {
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    const page = await get("/");
    expect(page.status).toBe(200);
    expect(page.headers["content-type"]).toBe("text/html; charset=utf-8");
    expect(page.body).toBe(PAGE_HTML);
    expect(page.headers["content-security-policy"]).toMatch(/default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'/);
    expect((await get("/dashboard.js")).body).toBe(PAGE_SCRIPT);
    expect((await get("/dashboard.css")).headers["content-type"]).toBe("text/css; charset=utf-8");
    expect((await get("/favicon.ico")).status).toBe(204);
    expect((await get("/nope")).status).toBe(404);
    expect((await get("/", { method: "POST" })).status).toBe(405);
  });

  test("the page loads nothing from elsewhere, and its script is valid JavaScript", () => {
    for (const text of [PAGE_HTML, PAGE_SCRIPT, PAGE_STYLE]) expect(text).not.toMatch(/https?:\/\/|\/\/fonts|@import|url\(/);
    expect(() => new Script(PAGE_SCRIPT, { filename: "dashboard.js" })).not.toThrow();
    // Values from the backend go in as text: the script never writes markup.
    expect(PAGE_SCRIPT).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write/);
  });

  test("answers only to loopback host names when bound to loopback (no DNS rebinding)", async () => {
    const port = new URL(server.url).port;
    expect((await get("/", { host: `localhost:${port}` })).status).toBe(200);
    expect((await get("/", { host: `[::1]:${port}` })).status).toBe(200);
    const foreign = await get("/state.json", { host: `attacker.example:${port}` });
    expect(foreign.status).toBe(403);
    expect(foreign.body).not.toContain('"snapshot"');
  });

  test("state.json is null before the first reading, then the latest update", async () => {
    expect(JSON.parse((await get("/state.json")).body)).toBeNull();
    poller.start();
    await clock.advance(0);
    const state = JSON.parse((await get("/state.json")).body) as { snapshot: { resource: string; epoch: number } };
    expect(state.snapshot).toMatchObject({ resource: "r", epoch: 1 });
  });

  test("every page gets the latest update at once and then each reading; close() ends their streams", async () => {
    poller.start();
    await clock.advance(0);
    const pages = await Promise.all([openStream(), openStream(), openStream()]);
    await until(() => server.pages === 3 && pages.every((p) => p.messages.length === 1));
    await clock.advance(1000);
    await until(() => pages.every((p) => p.messages.length === 3));
    expect(poller.readings).toBe(3);
    pages[0]!.close();
    await until(() => server.pages === 2);
    await server.close();
    await Promise.all(pages.slice(1).map((p) => p.ended));
  });
});
