// 1,000 limiters × 1,000 partitions on virtual time (issue: fair share at scale): every limiter
// saturated (two acquire loops each) against one MemoryLeaseBackend with 0.5 ms latency each way;
// prints, every 10 virtual seconds, the partitions held (total, min and max per limiter), the lease
// changes, and backend calls per limiter per second with the calls by operation. Slow in wall time
// (about 9 minutes per 10 virtual seconds on one core: every heartbeat returns every record), so it
// is not part of npm test or npm run bench. Run: npx tsx bench/scale-1000.ts [limiters] [partitions] [virtualSeconds]
import { performance } from "node:perf_hooks";
import { MemoryLeaseBackend } from "../src/lease-backends/memory.js";
import { PartitionedRateLimiter } from "../src/limiter/partitioned-rate-limiter.js";
import { VirtualClock } from "../src/testing/virtual-clock.js";
const N = Number(process.argv[2] ?? 1000), P = Number(process.argv[3] ?? 1000);
const wall = performance.now();
const clock = new VirtualClock();
const backend = new MemoryLeaseBackend({ clock });
backend.setLatency(0.5, 0.5);
let last = 0, changes = 0;
const limiters = Array.from({ length: N }, (_, i) => {
  const l = new PartitionedRateLimiter({ resource: "s", limit: P * 10, intervalMs: 1000, partitions: P, backend, clock, holderId: `l${i}` });
  for (const e of ["acquired", "released", "lost"] as const) l.on(e, () => { last = clock.now(); changes++; });
  return l;
});
let running = true;
for (const l of limiters) for (let k = 0; k < 2; k++) void (async () => { while (running) { try { await l.acquire(1); } catch { return; } } })();
const total = () => Object.values(backend.calls).reduce((a, b) => a + b, 0);
let mark = 0, markAt = 0;
const until = Number(process.argv[4] ?? 10) * 1000;
while (clock.now() < until) {
  await clock.advance(100);
  if (clock.now() % 10_000 === 0) {
    const held = limiters.map((l) => l.stats().heldPartitions);
    const c = total();
    console.log(`t=${clock.now() / 1000}s wall=${((performance.now() - wall) / 1000).toFixed(1)}s held=${held.reduce((a, b) => a + b, 0)} min=${Math.min(...held)} max=${Math.max(...held)} changes=${changes} last=${last} calls/s/limiter=${((c - mark) / ((clock.now() - markAt) / 1000) / N).toFixed(3)}`, JSON.stringify(backend.calls));
    mark = c; markAt = clock.now();
  }
}
running = false;
process.exit(0);
