/**
 * partitioned-rate-limiter/grpc: client and server interceptors for @grpc/grpc-js (an optional
 * peer dependency: `npm install @grpc/grpc-js`), whose module the caller passes in.
 */
export * from "../grpc/index.js";
