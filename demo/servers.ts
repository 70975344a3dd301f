import { parseBackendUrl, type BackendSpec } from "../src/cli/backend-url.js";
import type { AzuriteServer } from "../test/support/servers/azurite.js";

/** The lease backends the demo can run on. */
export type DemoBackend = "azure" | "redis" | "etcd" | "redlock";

/** A lease backend the demo started (or found through the tests' env vars). */
export interface DemoLeaseServer {
  readonly spec: BackendSpec;
  /** A line for the terminal: what runs where. */
  readonly description: string;
  /**
   * True when the demo started the server just now, so it holds no lease anyone could have
   * forgotten and the plan may be created without a grace period.
   */
  readonly fresh: boolean;
  stop(): Promise<void>;
}

/**
 * startLeaseServer starts what `--backend` names, the way the tests do: Azure reuses the demo's
 * Azurite (blob leases next to the queues); Redis, Redlock (three Redis) and etcd start local
 * servers from their binaries (installed with apt-get when running as root on Debian), unless
 * REDIS_URL, REDLOCK_URLS or ETCD_ENDPOINTS point at running ones.
 */
export async function startLeaseServer(kind: DemoBackend, azurite: AzuriteServer): Promise<DemoLeaseServer> {
  switch (kind) {
    case "azure":
      return {
        spec: parseBackendUrl([`${azurite.connectionString};container=rate-limits`]),
        description: `Azure Blob leases on Azurite (blob port ${azurite.blobPort})`,
        fresh: azurite.managed,
        stop: async () => undefined,
      };
    case "redis": {
      const { startRedis } = await import("../test/support/servers/redis.js");
      const server = await startRedis();
      return { spec: parseBackendUrl([server.url]), description: `Redis at ${server.url}`, fresh: !process.env.REDIS_URL, stop: () => server.stop() };
    }
    case "redlock": {
      const { startRedisTrio } = await import("../test/support/servers/redis.js");
      const servers = await startRedisTrio();
      const urls = servers.map((s) => s.url);
      return {
        spec: parseBackendUrl(urls),
        description: `Redlock over ${urls.join(", ")}`,
        fresh: !process.env.REDLOCK_URLS,
        stop: async () => void (await Promise.all(servers.map((s) => s.stop()))),
      };
    }
    case "etcd": {
      const { startEtcd } = await import("../test/support/servers/etcd.js");
      const server = await startEtcd();
      const host = server.endpoint.replace(/^https?:\/\//, "");
      return { spec: parseBackendUrl([`etcd://${host}`]), description: `etcd at ${host}`, fresh: server.managed, stop: () => server.stop() };
    }
  }
}
