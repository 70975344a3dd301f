import * as grpc from "@grpc/grpc-js";
import { performance } from "node:perf_hooks";
import { limiterInterceptor } from "../../src/grpc/client-interceptor.js";
import type { PartitionedRateLimiter } from "../../src/limiter/partitioned-rate-limiter.js";
import { RECORDER_SERVICE } from "./grpc-service.js";
import { COST_HEADER, SENT_AT_HEADER, WORKER_HEADER } from "./recorder.js";

// No jest imports here: worker processes (worker.ts) call a gRPC recorder through it.

/** The answer of one call: its status code (0 = OK). */
export type GrpcOutcome = number;

/** GrpcSender calls a gRPC recorder; every call is admitted by the limiter's client interceptor. */
export interface GrpcSender {
  /** One `Record` call of `cost` units; resolves its status code (never rejects). */
  call(cost: number): Promise<GrpcOutcome>;
  close(): void;
}

const RecorderClient = grpc.makeGenericClientConstructor(RECORDER_SERVICE, "Recorder");

/**
 * createGrpcSender connects to `url` (`grpc://host:port`, from startGrpcRecorder) with two
 * interceptors: {@link limiterInterceptor} (cost from the `x-cost` metadata) and, inside it, one
 * that stamps `x-sent-at` when the call actually leaves, after admission.
 */
export function createGrpcSender(url: string, limiter: PartitionedRateLimiter, workerId: string): GrpcSender {
  const target = new URL(url);
  const stampSentAt: grpc.Interceptor = (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set(SENT_AT_HEADER, String(performance.timeOrigin + performance.now()));
        next(metadata, listener);
      },
    });
  const admit = limiterInterceptor({ grpc, limiter, cost: (_method, metadata) => Number(metadata.get(COST_HEADER)[0] ?? 1) });
  const client = new RecorderClient(target.host, grpc.credentials.createInsecure(), { interceptors: [admit, stampSentAt] });
  return {
    call: (cost) =>
      new Promise<GrpcOutcome>((resolve) => {
        const metadata = new grpc.Metadata();
        metadata.set(WORKER_HEADER, workerId);
        metadata.set(COST_HEADER, String(cost));
        client.makeUnaryRequest(RECORDER_SERVICE.record.path, (b: Buffer) => b, (b: Buffer) => b, Buffer.alloc(0), metadata, {}, (error) =>
          resolve(error ? (error.code ?? grpc.status.UNKNOWN) : grpc.status.OK),
        );
      }),
    close: () => client.close(),
  };
}
