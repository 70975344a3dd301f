import * as grpc from "@grpc/grpc-js";
import { performance } from "node:perf_hooks";
import { RETRY_PUSHBACK_TRAILER } from "../../src/grpc/retry-pushback.js";
import { RECORDER_SERVICE } from "./grpc-service.js";
import { raisePriority } from "./priority.js";
import { QuotaWindow } from "./quota-window.js";
import { COST_HEADER, SENT_AT_HEADER, WORKER_HEADER, type Arrival, type Recorder, type RecorderOptions } from "./recorder.js";

// No jest imports here: scenarios and benchmarks start it too.

/**
 * startGrpcRecorder is {@link startRecorder} over gRPC: a grpc-js server on a free port of
 * 127.0.0.1 whose `/prl.test.Recorder/Record` records each call's arrival (its handler runs once
 * the request is complete), worker (`x-worker` metadata), cost (`x-cost`) and send time
 * (`x-sent-at`), and answers an empty message. With `quota`, a call over it gets
 * `RESOURCE_EXHAUSTED` with a `grpc-retry-pushback-ms` trailer (ms until the oldest accepted call
 * leaves the window); its Arrival's `status` is then 429 and otherwise 200, as for HTTP, so
 * scenario code reads both recorders alike. The URL is `grpc://127.0.0.1:PORT`. Like the HTTP
 * recorder it raises its thread's scheduling priority unless `raisePriority` is false.
 */
export async function startGrpcRecorder(options: RecorderOptions = {}): Promise<Recorder> {
  let log: Arrival[] = [];
  const quota = options.quota ? new QuotaWindow(options.quota) : null;
  const first = (metadata: grpc.Metadata, key: string): string | undefined => {
    const value = metadata.get(key)[0];
    return typeof value === "string" ? value : undefined;
  };

  const server = new grpc.Server();
  server.addService(RECORDER_SERVICE, {
    record(call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) {
      const t = performance.now();
      const cost = Number(first(call.metadata, COST_HEADER) ?? "1");
      const sentAt = Number(first(call.metadata, SENT_AT_HEADER));
      const delayMs = Number.isFinite(sentAt) && sentAt > 0 ? performance.timeOrigin + t - sentAt : null;
      const refusedForMs = quota?.admit(t, cost) ?? null;
      log.push({ t, worker: first(call.metadata, WORKER_HEADER) ?? "?", cost, status: refusedForMs === null ? 200 : 429, delayMs, sentAt: delayMs === null ? null : t - delayMs });
      if (refusedForMs === null) return callback(null, Buffer.alloc(0));
      const trailers = new grpc.Metadata();
      trailers.set(RETRY_PUSHBACK_TRAILER, String(Math.max(1, Math.ceil(refusedForMs))));
      callback({ code: grpc.status.RESOURCE_EXHAUSTED, details: "quota exceeded", metadata: trailers });
    },
    stream(call: grpc.ServerWritableStream<Buffer, Buffer>) {
      call.end();
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, p) => (error ? reject(error) : resolve(p))),
  );
  const restorePriority = options.raisePriority === false ? () => undefined : raisePriority();
  return {
    url: `grpc://127.0.0.1:${port}`,
    now: () => performance.now(),
    arrivals: () => log.slice(),
    reset: () => {
      log = [];
      quota?.reset();
    },
    stop: () =>
      new Promise<void>((resolve) => {
        // Callers are gone by now (workers stopped); anything left is cut off rather than waited for.
        server.forceShutdown();
        restorePriority();
        resolve();
      }),
  };
}
