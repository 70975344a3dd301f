import { Redis } from "ioredis";
import { RedlockLeaseBackend } from "../../src/lease-backends/redlock.js";
import { startRedisTrio, type RedisServer } from "../support/servers/redis.js";
import { describeLeaseBackendConformance } from "./lease-backend-conformance.js";

let servers: RedisServer[] = [];
const clients: Redis[] = [];

async function connect(url: string): Promise<Redis> {
  const client = new Redis(url, { enableOfflineQueue: false, maxRetriesPerRequest: 1, commandTimeout: 5000, lazyConnect: true });
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
    return {
      backend: await newBackend(),
      newClient: newBackend,
      ttlMs: 1000,
      graceMs: 1000,
      wait: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
      // A stalled minority is what Redlock tolerates; the suite wants calls that cannot finish.
      stall: async () => {
        for (const s of servers) s.pause();
        return async () => {
          for (const s of servers) s.resume();
        };
      },
    };
  },
  async () => {
    for (const client of clients) client.disconnect();
    await Promise.all(servers.map((s) => s.stop()));
  },
);
