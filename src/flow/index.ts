export { parseRetryAfter } from "./retry-after.js";
export type { ParseRetryAfterOptions } from "./retry-after.js";
export { fullJitterBackoff } from "./full-jitter-backoff.js";
export { abortableDelay } from "./abortable-delay.js";
export { retryWithLimiter } from "./retry-with-limiter.js";
export type { AttemptOutcome, RetryDecision, RetryInfo, RetryOptions, RetryPolicyOptions } from "./retry-with-limiter.js";
export { createRetryingFetch } from "./retrying-fetch.js";
export type { FetchLike, RetryingFetchOptions } from "./retrying-fetch.js";
export { AdaptiveRateController } from "./adaptive-rate-controller.js";
export type { AdaptiveRateControllerOptions, AdaptiveRateControllerEvents, AdaptiveRateControllerStats, RateFactorChange } from "./adaptive-rate-controller.js";
export { pace } from "./pace.js";
export type { PaceOptions } from "./pace.js";
export { createPacingTransform } from "./pacing-transform.js";
export { loadShedding } from "./load-shedding.js";
export type { LoadShedder, LoadSheddingOptions, RequestListener, ShedInfo } from "./load-shedding.js";
// The durable-queue consumer loop; the queue sources have their own entries (src/entries/consumers).
export * from "./consumers/index.js";
