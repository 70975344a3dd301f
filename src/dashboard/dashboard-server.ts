import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { EventStream } from "./event-stream.js";
import { PAGE_HTML } from "./page-html.js";
import { PAGE_SCRIPT } from "./page-script.js";
import { PAGE_STYLE } from "./page-style.js";
import type { ResourcePoller } from "./resource-poller.js";

/** Options of {@link startDashboardServer}. */
export interface DashboardServerOptions {
  /** The one poller whose readings every page gets; the server subscribes to it but does not start or close it. */
  readonly poller: ResourcePoller;
  /** Address to listen on. Default `"127.0.0.1"`: only this machine can open the page. */
  readonly host?: string;
  /** Port to listen on; 0 picks a free one. */
  readonly port: number;
}

/** A listening dashboard, from {@link startDashboardServer}. */
export interface DashboardServer {
  /** Where the page is, e.g. `http://127.0.0.1:7070/`. */
  readonly url: string;
  /** How many pages are connected to the event stream now. */
  readonly pages: number;
  /** Ends every event stream and connection and stops listening. */
  close(): Promise<void>;
}

// The page loads nothing but its own script and style sheet and talks only to its own server.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/i;

/**
 * startDashboardServer serves the dashboard: `/` (the page), `/dashboard.js`, `/dashboard.css`,
 * `/events` (Server-Sent Events: the latest update at once, then one per reading) and
 * `/state.json` (the latest update, for scripts). Every page shares the poller's readings, so the
 * backend is read at the poller's pace however many pages are open.
 *
 * Bound to a loopback address, it answers only requests whose Host header names a loopback host,
 * so a web page elsewhere cannot read it through DNS rebinding.
 */
export async function startDashboardServer(options: DashboardServerOptions): Promise<DashboardServer> {
  const host = options.host ?? "127.0.0.1";
  const stream = new EventStream();
  const unsubscribe = options.poller.subscribe((update) => stream.send(update));
  const loopbackOnly = LOOPBACK.test(host);

  const server = createServer((req, res) => {
    if (loopbackOnly && !LOOPBACK.test(hostnameOf(req))) return plain(res, 403, "this dashboard answers only to 127.0.0.1 and localhost\n");
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.setHeader("allow", "GET, HEAD");
      return plain(res, 405, "only GET and HEAD\n");
    }
    const path = (req.url ?? "/").split("?")[0];
    switch (path) {
      case "/":
      case "/index.html":
        return asset(res, "text/html; charset=utf-8", PAGE_HTML);
      case "/dashboard.js":
        return asset(res, "text/javascript; charset=utf-8", PAGE_SCRIPT);
      case "/dashboard.css":
        return asset(res, "text/css; charset=utf-8", PAGE_STYLE);
      case "/events":
        return stream.open(req, res, options.poller.latest() ?? undefined);
      case "/state.json":
        return asset(res, "application/json; charset=utf-8", `${JSON.stringify(options.poller.latest())}\n`);
      case "/favicon.ico":
        res.writeHead(204).end();
        return;
      default:
        return plain(res, 404, "not found\n");
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const shownHost = address.family === "IPv6" ? `[${address.address}]` : address.address;
  return {
    url: `http://${shownHost}:${address.port}/`,
    get pages() {
      return stream.size;
    },
    close: async () => {
      unsubscribe();
      stream.closeAll();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
    },
  };
}

function hostnameOf(req: IncomingMessage): string {
  const header = req.headers.host ?? "";
  const bracketed = /^\[([^\]]+)\]/.exec(header);
  return bracketed ? bracketed[1]! : header.replace(/:\d+$/, "");
}

function asset(res: ServerResponse, type: string, body: string): void {
  res.writeHead(200, {
    "content-type": type,
    "content-length": Buffer.byteLength(body),
    "cache-control": "no-store",
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
  });
  res.end(body);
}

function plain(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, { "content-type": "text/plain; charset=utf-8", "x-content-type-options": "nosniff" });
  res.end(text);
}
