import type { Metadata } from "@grpc/grpc-js";
import { finiteNumber } from "../contract/validate.js";

/** An interceptor setting per call: a number, or a function of the method path and the call's metadata. */
export type PerCall = number | ((method: string, metadata: Metadata) => number);

/** What one call is charged: its cost in units (0: no admission) and its queue priority. */
export interface CallWeights {
  readonly cost: number;
  readonly priority: number;
}

/**
 * Checks an interceptor's `cost` (default 1, at least 0) and `priority` (default 0) options once,
 * naming `where` in the ConfigError, and returns the weights of one call. Functions run per call
 * and what they return is checked then: the ConfigError is the interceptor's to turn into a
 * gRPC status.
 */
export function callWeights(where: string, cost: PerCall | undefined, priority: PerCall | undefined): (method: string, metadata: Metadata) => CallWeights {
  const c = cost ?? 1;
  const p = priority ?? 0;
  if (typeof c !== "function") finiteNumber(`${where}(options.cost)`, c, { min: 0 });
  if (typeof p !== "function") finiteNumber(`${where}(options.priority)`, p);
  return (method, metadata) => ({
    cost: typeof c === "function" ? finiteNumber(`${where}: cost("${method}")`, c(method, metadata), { min: 0 }) : c,
    priority: typeof p === "function" ? finiteNumber(`${where}: priority("${method}")`, p(method, metadata)) : p,
  });
}
