// npm install etcd3 cockatiel
import { noop } from "cockatiel";
import { Etcd3 } from "etcd3";
import { PartitionedRateLimiter } from "partitioned-rate-limiter";
import { EtcdLeaseBackend } from "partitioned-rate-limiter/etcd";

const client = new Etcd3({
  hosts: (process.env.ETCD_ENDPOINTS ?? "http://127.0.0.1:2379").split(","),
  faultHandling: { host: () => noop, global: noop },  // no retries, no circuit breaker: the limiter retries
});
const backend = new EtcdLeaseBackend({ client });

const limiter = new PartitionedRateLimiter({
  resource: "search-api", limit: 100, intervalMs: 1000, partitions: 10, backend,
  leaseTtlMs: 15_000,                    // whole seconds, at least 2000 (etcd leases)
});
await limiter.acquire();
console.log(`admitted; holding ${limiter.stats().heldPartitions} partitions`);
await limiter.close();
client.close();
