import type { Metadata } from "@grpc/grpc-js";

/**
 * The trailer of gRPC's retry pushback (gRFC A6): how many ms the client should wait before
 * retrying, a non-negative integer; a negative or malformed value means "do not retry".
 */
export const RETRY_PUSHBACK_TRAILER = "grpc-retry-pushback-ms";

/**
 * retryPushbackMs reads the `grpc-retry-pushback-ms` trailer: the ms to wait, or null when it is
 * missing, negative or not an integer (gRFC A6: then the server asks for no retry at all).
 */
export function retryPushbackMs(trailers: Pick<Metadata, "get"> | undefined): number | null {
  const value = trailers?.get(RETRY_PUSHBACK_TRAILER)[0];
  const text = typeof value === "string" ? value.trim() : null;
  if (text === null || !/^\d{1,10}$/.test(text)) return null;
  return Number(text);
}
