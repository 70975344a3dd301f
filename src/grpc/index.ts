export { limiterInterceptor } from "./client-interceptor.js";
export type { LimiterInterceptorOptions } from "./client-interceptor.js";
export { loadSheddingInterceptor } from "./server-interceptor.js";
export type { GrpcShedInfo, LoadSheddingInterceptorOptions } from "./server-interceptor.js";
export { PushbackSchedule } from "./pushback-schedule.js";
export type { BacklogSnapshot } from "./pushback-schedule.js";
export { RETRY_PUSHBACK_TRAILER, retryPushbackMs } from "./retry-pushback.js";
export type { GrpcModule } from "./grpc-module.js";
