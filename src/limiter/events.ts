/** Why a partition stopped being held. */
export type LostReason = "renew-rejected" | "expired";
/** Why a partition was given back. */
export type ReleaseReason = "surplus" | "close";

/** Payload of the `"acquired"` event. */
export interface AcquiredEvent {
  readonly partition: number;
  readonly fencingToken: number | null;
  /** ms until the local deadline, from now. */
  readonly validForMs: number;
}
/** Payload of the `"renewed"` event. */
export interface RenewedEvent {
  readonly partition: number;
  readonly validForMs: number;
}
/** Payload of the `"released"` event. */
export interface ReleasedEvent {
  readonly partition: number;
  readonly reason: ReleaseReason;
}
/** Payload of the `"lost"` event: the backend said the lease is gone, or its local deadline passed unrenewed. */
export interface LostEvent {
  readonly partition: number;
  readonly reason: LostReason;
}
/** Payload of the `"backend-error"` event: a backend call failed; held partitions run to their deadlines. */
export interface BackendErrorEvent {
  readonly operation: "ensurePlan" | "tryAcquire" | "renew" | "release";
  readonly error: unknown;
  /** How long the call took, in ms. */
  readonly durationMs: number;
}
/** Payload of the `"throttled"` event: the service pushed back (see `reportThrottle`). */
export interface ThrottledEvent {
  /** The service's Retry-After, in ms, when it gave one. */
  readonly retryAfterMs: number | null;
}
/** Payload of the `"backend-call"` event: every backend call with its duration, for metrics. */
export interface BackendCallEvent {
  readonly operation: "ensurePlan" | "tryAcquire" | "renew" | "release";
  readonly durationMs: number;
  readonly ok: boolean;
}

/** Payload of the `"admitted"` event: one admission, with how long it waited in the queue. */
export interface AdmittedEvent {
  /** Units admitted. */
  readonly cost: number;
  /** ms from the `acquire()` call to the admission; 0 when admitted without queueing. */
  readonly waitedMs: number;
}

/** The events of a PartitionedRateLimiter, name → listener arguments. */
export interface PartitionedRateLimiterEvents {
  acquired: [AcquiredEvent];
  renewed: [RenewedEvent];
  released: [ReleasedEvent];
  lost: [LostEvent];
  "backend-error": [BackendErrorEvent];
  "backend-call": [BackendCallEvent];
  throttled: [ThrottledEvent];
  admitted: [AdmittedEvent];
}
