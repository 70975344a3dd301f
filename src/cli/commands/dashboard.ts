import { startDashboardServer, type DashboardServer } from "../../dashboard/dashboard-server.js";
import { ResourcePoller } from "../../dashboard/resource-poller.js";
import { wholeNumber } from "../args.js";
import { describeCause } from "../backend-unreachable-error.js";
import { redact } from "../backend-url.js";
import { EXIT, resourceArgument, withBackend, type Command } from "../command.js";
import { UsageError } from "../usage-error.js";

/** The port the dashboard listens on unless `--port` says otherwise. */
export const DEFAULT_DASHBOARD_PORT = 7070;

/** `dashboard <resource>`: a live page of the plan, the partitions, the holders and the lease moves, until SIGINT or SIGTERM. */
export const dashboardCommand: Command = {
  name: "dashboard",
  synopsis: "dashboard <resource> --backend <address> [--port <n>] [--host <address>] [--interval-ms <ms>]",
  description:
    "Serves a live status page of the resource: the plan and its epoch, a grid of the partitions coloured by holder with " +
    "pool and time left, per holder its wants, weight, reserve, fair share, held partitions and recent rate, and the lease " +
    "moves and grace periods as they happen. One reader polls the backend (at most once per --interval-ms) for every open " +
    "page. The page shows partition and holder data only, never the backend's address or credentials. Runs until SIGINT " +
    "(Ctrl-C) or SIGTERM; with --json, prints the page's address as JSON.",
  options: {
    port: { type: "string", value: "<n>", help: `port of the page (default ${DEFAULT_DASHBOARD_PORT}; 0: any free port)` },
    host: { type: "string", value: "<address>", help: "address to listen on (default 127.0.0.1: this machine only)" },
    "interval-ms": { type: "string", value: "<ms>", help: "least time between two readings of the backend, however many pages are open (default 500)" },
  },
  async run(line, io) {
    const resource = resourceArgument(line, "dashboard");
    const portText = line.string("port");
    const port = portText === undefined ? DEFAULT_DASHBOARD_PORT : wholeNumber("port", portText, { min: 0, max: 65_535 });
    const intervalText = line.string("interval-ms");
    const intervalMs = intervalText === undefined ? 500 : wholeNumber("interval-ms", intervalText, { min: 100, max: 600_000, unit: "milliseconds" });
    const host = line.string("host") ?? "127.0.0.1";
    return withBackend(
      line,
      io,
      async ({ backend, where, timeoutMs }) => {
        const poller = new ResourcePoller({
          backend,
          resource,
          intervalMs,
          timeoutMs,
          onError: (error) => io.err.write(`warning: reading ${resource} from ${where} failed: ${redact(describeCause(error))}; trying again every ${intervalMs} ms\n`),
          onRecovered: () => io.err.write(`reading ${resource} from ${where} works again\n`),
        });
        // Listen before the first reading, so a taken port is reported before anything else happens.
        let server: DashboardServer;
        try {
          server = await startDashboardServer({ poller, host, port });
        } catch (error) {
          throw new UsageError(`cannot listen on ${host}:${port} (${describeCause(error)}); choose another --port or --host (--port 0 picks a free port)`);
        }
        poller.start();
        if (line.flag("json")) io.out.write(`${JSON.stringify({ url: server.url, resource, backend: backend.name })}\n`);
        else io.out.write(`dashboard of ${resource} on ${where}: ${server.url} (Ctrl-C to stop)\n`);
        const signal = await stopSignal();
        io.err.write(`${signal}: stopping the dashboard\n`);
        await server.close();
        await poller.close();
        return EXIT.ok;
      },
      { reconnect: true },
    );
  },
};

/** Resolves with the first SIGINT or SIGTERM; until then, they do not end the process. */
function stopSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (signal: NodeJS.Signals) => {
      process.off("SIGINT", on);
      process.off("SIGTERM", on);
      resolve(signal);
    };
    process.on("SIGINT", on);
    process.on("SIGTERM", on);
  });
}
