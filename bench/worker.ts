/**
 * One process of the accuracy scenario (bench/accuracy.ts forks four). It builds one contender
 * on the shared Redis, says "ready", and on "start" runs saturating demand: `concurrency` loops of
 * "wait for admission, then one request to the recorder" over a keep-alive agent. On "stop" it
 * stops its limiter, sends its counters and exits. test/support/worker.ts does the same for our
 * limiter alone; the bench needs the peers driven by the same request path.
 */
import { setMaxListeners } from "node:events";
import { Agent, request } from "node:http";
import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import { COST_HEADER, SENT_AT_HEADER, WORKER_HEADER } from "../test/support/recorder.js";
import { connectRedis, quitRedis } from "./common.js";
import { bottleneckCluster, redisBackend, rlfQueue, rlfRedis } from "./peers.js";
import { BENCH_WORKER_ENV, type BenchWorkerConfig, type BenchWorkerMessage, type BenchWorkerStats } from "./worker-protocol.js";
import { PartitionedRateLimiter } from "../src/limiter/partitioned-rate-limiter.js";



interface Admitter {
  admit(): Promise<void>;
  stop(): Promise<void>;
  detail(): string;
}

const config = JSON.parse(process.env[BENCH_WORKER_ENV] ?? "null") as BenchWorkerConfig | null;
if (!config || !process.send) {
  process.stderr.write(`bench/worker.ts must be forked by bench/accuracy.ts with ${BENCH_WORKER_ENV}\n`);
  process.exit(2);
}
const cfg = config;
const send = (message: BenchWorkerMessage) => {
  if (process.connected) process.send!(message);
};

const agent = new Agent({ keepAlive: true, maxSockets: cfg.concurrency });
const target = new URL(cfg.targetUrl);
const counters = { admitted: 0, requestErrors: 0, admitErrors: 0 };
let stopping = false;
let loops: Promise<void>[] = [];
// Timers firing late cost a paced limiter utilisation, so the report says how late they were.
const loopDelay = monitorEventLoopDelay({ resolution: 1 });

function sendRequest(): Promise<void> {
  return new Promise((resolve) => {
    const req = request(
      {
        host: target.hostname,
        port: target.port,
        path: target.pathname,
        method: "GET",
        agent,
        headers: { [WORKER_HEADER]: cfg.id, [COST_HEADER]: "1", [SENT_AT_HEADER]: String(performance.timeOrigin + performance.now()) },
      },
      (res) => {
        res.resume();
        res.once("end", resolve);
        res.once("error", resolve);
      },
    );
    req.once("error", () => {
      counters.requestErrors++;
      resolve();
    });
    req.end();
  });
}

async function build(): Promise<Admitter> {
  const client = await connectRedis(cfg.redisUrl);
  switch (cfg.kind) {
    case "ours": {
      const limiter = new PartitionedRateLimiter({
        resource: cfg.name,
        limit: cfg.quota.limit,
        intervalMs: cfg.quota.intervalMs,
        partitions: cfg.partitions,
        backend: redisBackend(client, `bench:${cfg.name}:`),
        holderId: `${cfg.id}-${process.pid}`,
      });
      const abort = new AbortController();
      // Every queued acquire() listens on this one signal; Node warns past 10 listeners by default.
      setMaxListeners(cfg.concurrency + 10, abort.signal);
      return {
        admit: () => limiter.acquire(1, { signal: abort.signal }),
        stop: async () => {
          abort.abort(new Error("stopping"));
          await limiter.close();
          await quitRedis(client);
        },
        detail: () => {
          const s = limiter.stats();
          return `held ${s.heldPartitions}, leases acquired ${s.leasesAcquired} renewed ${s.leasesRenewed} lost ${s.leasesLost}, backend errors ${s.backendErrors}`;
        },
      };
    }
    case "rlf-redis": {
      const queue = rlfQueue(rlfRedis(cfg.quota, client, `bench:${cfg.name}:rlf`));
      return {
        admit: async () => {
          await queue.removeTokens(1);
        },
        stop: () => quitRedis(client),
        detail: () => "",
      };
    }
    case "bottleneck-cluster": {
      await quitRedis(client);
      const url = new URL(cfg.redisUrl);
      const bn = bottleneckCluster(cfg.quota, cfg.name, url.hostname, Number(url.port), false);
      await bn.ready();
      return {
        // Admission is when Bottleneck starts the job; the job itself is not awaited here.
        admit: () => bn.schedule(() => Promise.resolve()),
        stop: async () => {
          await bn.stop({ dropWaitingJobs: true }).catch(() => undefined);
          await bn.disconnect(false).catch(() => undefined);
        },
        detail: () => "",
      };
    }
  }
}

async function loop(admitter: Admitter): Promise<void> {
  while (!stopping) {
    try {
      await admitter.admit();
    } catch {
      if (stopping) return;
      counters.admitErrors++;
      await new Promise((resolve) => setTimeout(resolve, 10));
      continue;
    }
    if (stopping) return;
    counters.admitted++;
    await sendRequest();
  }
}

build().then(
  (admitter) => {
    process.on("message", (message: { type: string }) => {
      if (message.type === "start" && loops.length === 0) {
        loopDelay.enable();
        loops = Array.from({ length: cfg.concurrency }, () => loop(admitter));
      } else if (message.type === "stop" && !stopping) {
        stopping = true;
        const detail = admitter.detail();
        loopDelay.disable();
        const loopDelayMs = { p50: loopDelay.percentile(50) / 1e6, p99: loopDelay.percentile(99) / 1e6 };
        void (async () => {
          await admitter.stop().catch(() => undefined);
          await Promise.race([Promise.all(loops), new Promise((resolve) => setTimeout(resolve, 3_000))]);
          agent.destroy();
          const stats: BenchWorkerStats = { ...counters, detail, loopDelayMs };
          if (process.connected) process.send!({ type: "stopped", stats } satisfies BenchWorkerMessage, () => process.exit(0));
          else process.exit(0);
        })();
      }
    });
    process.on("disconnect", () => process.exit(0));
    send({ type: "ready" });
  },
  (error: unknown) => {
    send({ type: "failed", message: String(error) });
    process.exit(1);
  },
);
