import { Redis, type RedisClient } from "../support/ioredis.js";
import { RedlockLeaseBackend } from "../../src/lease-backends/redlock.js";
import { describeLeaseBackendConformance, type ConformanceTarget } from "../../src/testing/conformance.js";
import { startRedisTrio, type RedisServer } from "../support/servers/redis.js";

let servers: RedisServer[] = [];
const clients: RedisClient[] = [];

async function connect(url: string): Promise<RedisClient> {
  const client = new Redis(url, { enableOfflineQueue: false, maxRetriesPerRequest: 1, commandTimeout: 5000, lazyConnect: true });
  client.on("error", () => undefined);
  clients.push(client);
  await client.connect();
  return client;
}

const newBackend = async () =>
  new RedlockLeaseBackend({ clients: await Promise.all(servers.map((s) => connect(s.url))), keyPrefix: "conf:" });

describeLeaseBackendConformance(
  "redlock (3 servers)",
  async () => {
    servers = await startRedisTrio();
    const target: ConformanceTarget = {
      backend: await newBackend(),
      newClient: newBackend,
      ttlMs: 1000,
      wait: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
      // A stalled minority is what Redlock tolerates; the suite wants calls that cannot finish.
      stall: async () => {
        for (const s of servers) s.pause();
        return async () => {
          for (const s of servers) s.resume();
        };
      },
    };
    if (process.env.REDLOCK_URLS) {
      target.restoreNotApplicable = "REDLOCK_URLS names Redis servers these tests did not start, so they cannot restart them from snapshots";
    } else {
      // Every server restarted from its own snapshot (one restored server alone is outvoted: the
      // fault tests cover that case).
      target.snapshot = async () => {
        await Promise.all(servers.map((s) => s.save()));
        return async () => {
          await Promise.all(servers.map((s) => s.restartFromSnapshot()));
          await Promise.all(clients.map((c) => (c.status === "ready" ? undefined : new Promise((r) => c.once("ready", r)))));
        };
      };
    }
    return target;
  },
  async () => {
    for (const client of clients) client.disconnect();
    await Promise.all(servers.map((s) => s.stop()));
  },
);
