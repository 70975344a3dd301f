import { systemClock, type Clock } from "../contract/clock.js";

/**
 * abortableDelay resolves after `ms` on `clock`, or rejects at once with `signal.reason` when the
 * signal aborts (also if it already has). The timer is cleared on abort, so nothing is left behind.
 */
export function abortableDelay(ms: number, signal?: AbortSignal, clock: Clock = systemClock): Promise<void> {
  if (signal?.aborted) return Promise.reject(signal.reason);
  return new Promise<void>((resolve, reject) => {
    const onAbort = () => {
      clock.clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = clock.setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
