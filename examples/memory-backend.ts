import { MemoryLeaseBackend, PartitionedRateLimiter } from "partitioned-rate-limiter";
import { VirtualClock } from "partitioned-rate-limiter/testing";

// One process only. In tests, share a VirtualClock with the limiter: time moves when you say so.
const clock = new VirtualClock();
const backend = new MemoryLeaseBackend({ clock });
const limiter = new PartitionedRateLimiter({ resource: "memory-example", limit: 100, intervalMs: 1000, partitions: 4, backend, clock, minPartitions: 1 });

const admitted = limiter.acquire(5);
await clock.advance(1_000);              // virtual time: passes at once
await admitted;
backend.failNext("heartbeat", 1);        // fault injection: the next heartbeat (renewal of every held lease) fails
await clock.advance(10_000);
const { backendErrors, leasesLost } = limiter.stats();
console.log(`a failed renewal: ${backendErrors} backend error, ${leasesLost} leases lost; calls ${JSON.stringify(backend.calls)}`);

const closed = limiter.close();
await clock.advance(1_000);              // close() releases after the last slice, on the same clock
await closed;
