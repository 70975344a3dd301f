import { systemClock, type Clock, type TimerHandle } from "../contract/clock.js";
import type { LeaseBackend } from "../contract/lease-backend.js";
import { describeCause } from "../cli/backend-unreachable-error.js";
import { redact } from "../cli/backend-url.js";
import { changesBetween, type LeaseChange } from "./changes.js";
import { snapshotOf, type DashboardSnapshot } from "./snapshot.js";

/** One entry of the change log: a {@link LeaseChange}, numbered, with when it was seen. */
export interface ChangeEvent {
  /** 1 for the first change seen, +1 for each one after. */
  readonly seq: number;
  /** When the reading that showed it was taken, in ms since the Unix epoch. */
  readonly at: number;
  readonly change: LeaseChange;
}

/** DashboardUpdate is what every page receives after each reading: the reading and the recent change log. */
export interface DashboardUpdate {
  readonly snapshot: DashboardSnapshot;
  /** The most recent changes, oldest first, at most `keepChanges` of them. */
  readonly changes: readonly ChangeEvent[];
}

/** Options of {@link ResourcePoller}. */
export interface ResourcePollerOptions {
  readonly backend: LeaseBackend;
  readonly resource: string;
  /** Least time from the start of one `inspect` to the start of the next, in ms. */
  readonly intervalMs: number;
  /** Bound of each `inspect` call, in ms. */
  readonly timeoutMs: number;
  /** Paces the readings (default: the system clock). */
  readonly clock?: Clock;
  /** Wall-clock ms since the Unix epoch, for the times shown on the page (default `Date.now`). */
  readonly wallClock?: () => number;
  /** How many changes the log keeps. Default 200. */
  readonly keepChanges?: number;
  /**
   * Called with the error of the first failed reading of each run of failures (the page shows only
   * a short, redacted reason), e.g. to log it.
   */
  readonly onError?: (error: unknown) => void;
  /** Called when a reading succeeds after failures. */
  readonly onRecovered?: () => void;
}

/**
 * ResourcePoller reads one resource from its backend over and over, one `inspect` at a time and
 * at most one per `intervalMs`, however many pages listen: every subscriber gets the same
 * readings. It keeps the last reading and a log of what changed between readings, so a page that
 * opens later sees what happened before it.
 */
export class ResourcePoller {
  private readonly clock: Clock;
  private readonly wallClock: () => number;
  private readonly keepChanges: number;
  private readonly listeners = new Set<(update: DashboardUpdate) => void>();
  private readonly stop = new AbortController();
  private log: ChangeEvent[] = [];
  private seq = 0;
  private lastGood: DashboardSnapshot | null = null;
  private current: DashboardUpdate | null = null;
  private failing = false;
  private timer: TimerHandle | undefined;
  private wake: (() => void) | undefined;
  private running: Promise<void> | null = null;
  private count = 0;

  /** Creates a poller; nothing is read before {@link start}. */
  constructor(private readonly options: ResourcePollerOptions) {
    this.clock = options.clock ?? systemClock;
    this.wallClock = options.wallClock ?? Date.now;
    this.keepChanges = options.keepChanges ?? 200;
  }

  /** How many `inspect` calls were made so far. */
  get readings(): number {
    return this.count;
  }

  /** The latest update, or null before the first reading finished. */
  latest(): DashboardUpdate | null {
    return this.current;
  }

  /** Calls `listener` after every reading from now on. Returns the function that unsubscribes it. */
  subscribe(listener: (update: DashboardUpdate) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Starts reading: the first `inspect` at once. A second call does nothing. */
  start(): void {
    if (this.running !== null || this.stop.signal.aborted) return;
    this.running = this.loop();
  }

  /** Resolves with the first update (at once when there is one). Rejects when closed first. */
  first(): Promise<DashboardUpdate> {
    if (this.current !== null) return Promise.resolve(this.current);
    return new Promise((resolve, reject) => {
      const off = this.subscribe((update) => {
        off();
        this.stop.signal.removeEventListener("abort", onClose);
        resolve(update);
      });
      const onClose = () => {
        off();
        reject(new Error("the poller was closed before its first reading"));
      };
      this.stop.signal.addEventListener("abort", onClose, { once: true });
    });
  }

  /** Stops reading: a pending wait ends, a running `inspect` is aborted. Resolves when the loop has ended. */
  async close(): Promise<void> {
    this.stop.abort(new Error("dashboard closing"));
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.wake?.();
    await this.running;
    this.listeners.clear();
  }

  private async loop(): Promise<void> {
    while (!this.stop.signal.aborted) {
      const startedAt = this.clock.now();
      await this.readOnce();
      if (this.stop.signal.aborted) return;
      await this.sleep(this.options.intervalMs - (this.clock.now() - startedAt));
    }
  }

  private async readOnce(): Promise<void> {
    const { backend, resource, timeoutMs } = this.options;
    this.count++;
    let next: DashboardSnapshot;
    const changes: LeaseChange[] = [];
    try {
      const state = await backend.inspect(resource, { timeoutMs, signal: this.stop.signal });
      next = snapshotOf(resource, backend.name, state, this.wallClock());
      if (this.failing) {
        changes.push({ kind: "backend-back" });
        this.failing = false;
        this.options.onRecovered?.();
      }
      changes.push(...changesBetween(this.lastGood, next));
      this.lastGood = next;
    } catch (error) {
      if (this.stop.signal.aborted) return;
      const reason = redact(describeCause(error));
      if (!this.failing) {
        changes.push({ kind: "backend-failing", reason });
        this.failing = true;
        this.options.onError?.(error);
      }
      next = { ...(this.lastGood ?? snapshotOf(resource, backend.name, { stored: null, graceMs: 0, partitions: [], holders: [] }, 0)), error: reason };
    }
    const at = this.wallClock();
    for (const change of changes) this.log.push({ seq: ++this.seq, at, change });
    if (this.log.length > this.keepChanges) this.log = this.log.slice(-this.keepChanges);
    const update: DashboardUpdate = { snapshot: next, changes: this.log.slice() };
    this.current = update;
    for (const listener of [...this.listeners]) {
      try {
        listener(update);
      } catch {
        // A failing listener (a closed socket) must not stop the others or the loop.
      }
    }
  }

  private sleep(ms: number): Promise<void> {
    if (ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.wake = () => {
        this.wake = undefined;
        resolve();
      };
      this.timer = this.clock.setTimeout(() => {
        this.timer = undefined;
        this.wake?.();
      }, ms);
    });
  }
}
