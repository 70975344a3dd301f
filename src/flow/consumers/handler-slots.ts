/**
 * HandlerSlots is a FIFO counting semaphore: at most `size` holders at once; waiters are served in
 * arrival order and leave the line when their signal aborts (rejecting with its reason).
 */
export class HandlerSlots {
  private used = 0;
  private readonly line: { grant: () => void }[] = [];

  constructor(private readonly size: number) {}

  /** Slots taken now. */
  get inUse(): number {
    return this.used;
  }

  /** Resolves once a slot is this caller's; call {@link release} exactly once afterwards. */
  take(signal: AbortSignal): Promise<void> {
    if (signal.aborted) return Promise.reject(signal.reason);
    if (this.used < this.size && this.line.length === 0) {
      this.used++;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const waiter = {
        grant: () => {
          signal.removeEventListener("abort", onAbort);
          this.used++;
          resolve();
        },
      };
      const onAbort = () => {
        const at = this.line.indexOf(waiter);
        if (at >= 0) this.line.splice(at, 1);
        reject(signal.reason);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.line.push(waiter);
    });
  }

  /** Gives a slot back and hands it to the longest waiter, if any. */
  release(): void {
    this.used--;
    if (this.used < this.size) this.line.shift()?.grant();
  }
}
