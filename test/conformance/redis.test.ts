import { Redis, type RedisClient } from "../support/ioredis.js";
import { RedisLeaseBackend } from "../../src/lease-backends/redis.js";
import { describeLeaseBackendConformance, type ConformanceTarget } from "../../src/testing/conformance.js";
import { startRedis, type RedisServer } from "../support/servers/redis.js";

let server: RedisServer;
const clients: RedisClient[] = [];

/** A client as the README tells users to create one: no offline queue, bounded retries and command time. */
async function connect(): Promise<RedisClient> {
  const client = new Redis(server.url, { enableOfflineQueue: false, maxRetriesPerRequest: 1, commandTimeout: 5000, lazyConnect: true });
  client.on("error", () => undefined);
  clients.push(client);
  await client.connect();
  return client;
}

describeLeaseBackendConformance(
  "redis",
  async () => {
    server = await startRedis();
    const target: ConformanceTarget = {
      backend: new RedisLeaseBackend({ client: await connect(), keyPrefix: "conf:" }),
      newClient: async () => new RedisLeaseBackend({ client: await connect(), keyPrefix: "conf:" }),
      ttlMs: 1000,
      wait: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
      stall: async () => {
        server.pause();
        return async () => server.resume();
      },
    };
    if (process.env.REDIS_URL) {
      target.restoreNotApplicable = "REDIS_URL names a Redis these tests did not start, so they cannot restart it from a snapshot";
    } else {
      // SAVE, then later a SIGKILL and a restart that loads that RDB file: a new run_id, the plan
      // kept, leases as of the snapshot.
      target.snapshot = async () => {
        await server.save();
        return async () => {
          await server.restartFromSnapshot();
          // The clients reconnect on their own; wait until the first one is ready again.
          await Promise.all(clients.map((c) => (c.status === "ready" ? undefined : new Promise((r) => c.once("ready", r)))));
        };
      };
    }
    return target;
  },
  async () => {
    for (const client of clients) client.disconnect();
    await server?.stop();
  },
);
