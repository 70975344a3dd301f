/** Why a partition stopped being held. */
export type LostReason = "renew-rejected" | "expired";
/**
 * Why a partition was given back: surplus demand, a fair-share rebalance (another holder is below
 * its share), a followed plan change, or close.
 */
export type ReleaseReason = "surplus" | "rebalance" | "plan-changed" | "close";
/** The backend calls a limiter makes. */
export type BackendOperation = "ensurePlan" | "readPlan" | "tryAcquire" | "heartbeat" | "release";

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
  readonly operation: BackendOperation;
  readonly error: unknown;
  /** How long the call took, in ms. */
  readonly durationMs: number;
}
/** Payload of the `"backend-recovered"` event: a call succeeded after failures. */
export interface BackendRecoveredEvent {
  readonly operation: BackendOperation;
}
/** Payload of the `"throttled"` event: the service pushed back (see `reportThrottle`). */
export interface ThrottledEvent {
  /** The service's Retry-After, in ms, when it gave one. */
  readonly retryAfterMs: number | null;
}
/** Payload of the `"backend-call"` event: every backend call with its duration, for metrics. */
export interface BackendCallEvent {
  readonly operation: BackendOperation;
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
/**
 * Payload of the `"grace"` event: the backend grants nothing for a while (a new plan, a plan
 * change, or a backend that forgot leases). Emitted once per grace period.
 */
export interface GraceEvent {
  /** ms until the grace ends, by the backend's clock. */
  readonly remainingMs: number;
}
/** Payload of the `"plan-changed"` event: a followed plan got a new epoch and is now in force. */
export interface PlanChangedEvent {
  readonly previousEpoch: number;
  readonly epoch: number;
}

/** The events of a PartitionedRateLimiter, name → listener arguments. Unsubscribe with `off`. */
export interface PartitionedRateLimiterEvents {
  acquired: [AcquiredEvent];
  renewed: [RenewedEvent];
  released: [ReleasedEvent];
  lost: [LostEvent];
  "backend-error": [BackendErrorEvent];
  "backend-recovered": [BackendRecoveredEvent];
  "backend-call": [BackendCallEvent];
  throttled: [ThrottledEvent];
  admitted: [AdmittedEvent];
  grace: [GraceEvent];
  "plan-changed": [PlanChangedEvent];
}
