/**
 * fullJitterBackoff returns a delay in ms for retry number `attempt` (0 for the first retry):
 * uniformly random in [0, min(maxDelayMs, baseDelayMs × 2^attempt)). "Full jitter" spreads
 * retries of many clients over the whole window, so they do not return in synchronized waves.
 * `random` is injectable for tests (default `Math.random`).
 */
export function fullJitterBackoff(attempt: number, baseDelayMs: number, maxDelayMs: number, random: () => number = Math.random): number {
  // 2^attempt overflows to Infinity for huge attempts; the min() caps it.
  const ceiling = Math.min(maxDelayMs, baseDelayMs * 2 ** Math.max(0, attempt));
  return random() * ceiling;
}
