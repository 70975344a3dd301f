import { setMaxListeners } from "node:events";
import { TimeoutError } from "../errors/timeout-error.js";
import { systemClock, type Clock, type TimerHandle } from "../contract/clock.js";
import type { CallOptions } from "../contract/lease-backend.js";

/**
 * Runs `operation` under `opts`: rejects with `signal.reason` as soon as the signal aborts (or at
 * once if it already has) and with a TimeoutError after `timeoutMs`. The operation receives a
 * signal that aborts in both cases, so clients that accept one can cancel their work too. No
 * timer or listener outlives the call. Timeouts run on `clock` (virtual in tests).
 */
export async function withDeadline<T>(
  what: string,
  opts: CallOptions | undefined,
  operation: (signal: AbortSignal) => Promise<T>,
  clock: Clock = systemClock,
): Promise<T> {
  const outer = opts?.signal;
  if (outer?.aborted) throw outer.reason;
  const inner = new AbortController();
  // One call may fan out into many requests that each listen (a heartbeat of 20 leases on Azure,
  // a Redlock call to every server): more than Node's default of 10 is expected, not a leak, and
  // every listener goes with the call.
  setMaxListeners(0, inner.signal);
  let timer: TimerHandle | undefined;
  let onAbort: (() => void) | undefined;
  const stop = new Promise<never>((_, reject) => {
    if (opts?.timeoutMs !== undefined && Number.isFinite(opts.timeoutMs)) {
      const ms = Math.max(0, opts.timeoutMs);
      timer = clock.setTimeout(() => {
        const error = new TimeoutError(what, ms);
        inner.abort(error);
        reject(error);
      }, ms);
    }
    if (outer) {
      onAbort = () => {
        inner.abort(outer.reason);
        reject(outer.reason);
      };
      outer.addEventListener("abort", onAbort, { once: true });
    }
  });
  try {
    const work = operation(inner.signal);
    // A late rejection of the abandoned operation must not surface as unhandled.
    work.catch(() => undefined);
    return await Promise.race([work, stop]);
  } finally {
    if (timer !== undefined) clock.clearTimeout(timer);
    if (outer && onAbort) outer.removeEventListener("abort", onAbort);
  }
}
