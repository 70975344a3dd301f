import { ZooKeeperLeaseBackend } from "../../src/lease-backends/zookeeper.js";
import { describeLeaseBackendConformance, type ConformanceTarget } from "../../src/testing/conformance.js";
import { startZooKeeper, type ZooKeeperServer } from "../support/servers/zookeeper.js";

// A real standalone ZooKeeper on a free port (Debian's zookeeper package, or ZOOKEEPER_CONNECT),
// on real time with 2 s leases.
const TTL_MS = 2000;
let server: ZooKeeperServer;
let main: ZooKeeperLeaseBackend | undefined;
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const connect = () => new ZooKeeperLeaseBackend({ connectString: server.connectString, root: "/conf" });

describeLeaseBackendConformance(
  "zookeeper",
  async () => {
    server = await startZooKeeper();
    const target: ConformanceTarget = {
      backend: (main = connect()),
      // Each racer opens its own session, as another process would.
      newClient: async () => connect(),
      ttlMs: TTL_MS,
      wait: sleep,
      stall: async () => {
        server.pause();
        return async () => server.resume();
      },
      restoreNotApplicable:
        "ZooKeeper keeps every acknowledged write across restarts and leader changes (ZAB), so a running server never forgets a lease it kept; " +
        "a data dir restored from a backup is detected only by an instance that saw a later zxid (see the class TSDoc)",
    };
    return target;
  },
  async () => {
    await main?.close();
    await server?.stop();
  },
);
