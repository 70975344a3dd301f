import { PartitionedRateLimiter } from "partitioned-rate-limiter";
import { ZooKeeperLeaseBackend } from "partitioned-rate-limiter/zookeeper";

// npm install node-zookeeper-client. The backend opens (and replaces) its own sessions.
const backend = new ZooKeeperLeaseBackend({
  connectString: process.env.ZOOKEEPER_CONNECT ?? "127.0.0.1:2181",
  root: "/partitioned-rate-limiter",
});

const limiter = new PartitionedRateLimiter({ resource: "zk-api", limit: 100, intervalMs: 1000, partitions: 10, backend });
// ZooKeeper cannot prove what it granted before, so a new resource's first grant waits the
// creation grace: about 61 s (see "The guarantee").
await limiter.acquire();
console.log(`admitted; holding ${limiter.stats().heldPartitions} partition(s)`);
await limiter.close();
await backend.close(); // the backend owns its sessions: close it too
