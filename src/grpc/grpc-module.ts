import type * as Grpc from "@grpc/grpc-js";

/**
 * GrpcModule is the part of `@grpc/grpc-js` the interceptors use: pass the module itself
 * (`import * as grpc from "@grpc/grpc-js"`). Passed in rather than imported, so this package never
 * loads grpc-js (an optional peer dependency), and an application with two installed copies
 * builds its calls with the copy its clients and servers come from.
 */
export type GrpcModule = Pick<typeof Grpc, "InterceptingCall" | "ServerInterceptingCall" | "Metadata" | "status">;

/** Whether `value` looks like the grpc-js module, for option checks. */
export function isGrpcModule(value: unknown): value is GrpcModule {
  const m = value as Partial<GrpcModule> | null;
  return (
    typeof m === "object" && m !== null &&
    typeof m.InterceptingCall === "function" && typeof m.ServerInterceptingCall === "function" &&
    typeof m.Metadata === "function" && typeof m.status?.RESOURCE_EXHAUSTED === "number"
  );
}
