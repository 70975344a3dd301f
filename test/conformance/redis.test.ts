import { Redis } from "ioredis";
import { RedisLeaseBackend } from "../../src/lease-backends/redis.js";
import { startRedis, type RedisServer } from "../support/servers/redis.js";
import { describeLeaseBackendConformance } from "./lease-backend-conformance.js";

let server: RedisServer;
const clients: Redis[] = [];

/** A client as the README tells users to create one: no offline queue, bounded retries and command time. */
async function connect(): Promise<Redis> {
  const client = new Redis(server.url, { enableOfflineQueue: false, maxRetriesPerRequest: 1, commandTimeout: 5000, lazyConnect: true });
  clients.push(client);
  await client.connect();
  return client;
}

describeLeaseBackendConformance(
  "redis",
  async () => {
    server = await startRedis();
    return {
      backend: new RedisLeaseBackend({ client: await connect(), keyPrefix: "conf:" }),
      newClient: async () => new RedisLeaseBackend({ client: await connect(), keyPrefix: "conf:" }),
      ttlMs: 1000,
      graceMs: 1000,
      wait: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
      stall: async () => {
        server.pause();
        return async () => server.resume();
      },
    };
  },
  async () => {
    for (const client of clients) client.disconnect();
    await server?.stop();
  },
);
