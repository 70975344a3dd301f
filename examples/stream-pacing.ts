import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createPacingTransform, MemoryLeaseBackend, pace, PartitionedRateLimiter } from "partitioned-rate-limiter";

const limiter = new PartitionedRateLimiter({
  resource: "cosmos-writes", limit: 200, intervalMs: 1000, partitions: 5, backend: new MemoryLeaseBackend(), leaseTtlMs: 2000,
});

// A source of records, each costing `ru` units, and a stand-in for the write.
async function* readRecords() {
  for (let id = 1; id <= 20; id++) yield { id, ru: 5 };
}
let saved = 0;
const save = async (_record: { id: number; ru: number }) => void saved++;

for await (const record of pace(readRecords(), { limiter, cost: (r) => r.ru })) await save(record);

const source = Readable.from(Array.from({ length: 20 }, (_, i) => `line ${i}\n`));
const sink = new Writable({ objectMode: true, write: (_chunk, _encoding, done) => done() });
await pipeline(source, createPacingTransform({ limiter, cost: 1 }), sink);

console.log(`saved ${saved} records, piped 20 lines; ${limiter.stats().admitted} admissions`);
await limiter.close();
