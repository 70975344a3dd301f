/** One server's answer in a quorum round: its value or its error. */
export type Vote<T> =
  | { readonly index: number; readonly ok: true; readonly value: T }
  | { readonly index: number; readonly ok: false; readonly error: unknown };

/** What a quorum round's `decide` sees after each answer. */
export interface RoundState<T> {
  /** The answers so far, in arrival order. */
  readonly votes: readonly Vote<T>[];
  /** Servers that have not answered yet. */
  readonly pending: number;
  /** `floor(n / 2) + 1`. */
  readonly quorum: number;
  /**
   * True once no more answers will be waited for (all arrived, or the settle time after a quorum
   * of answers ran out): `decide` must then decide.
   */
  readonly final: boolean;
}

/** The majority of `n` servers. */
export function quorumOf(n: number): number {
  return Math.floor(n / 2) + 1;
}

/**
 * Sends one request per server and decides as answers arrive, without waiting for a stalled
 * server when the answers in hand already decide. `decide` returns the result, throws to reject,
 * or returns undefined to wait for more; it must decide when `final` is true. With `settleMs`,
 * once a quorum of servers has answered, the round waits at most that long for the rest (for
 * reads that want every answer but must not hang on one stalled server).
 */
export function runRound<T, R>(
  servers: number,
  send: (index: number) => Promise<T>,
  decide: (state: RoundState<T>) => R | undefined,
  settleMs?: number,
): Promise<R> {
  return new Promise<R>((resolve, reject) => {
    const votes: Vote<T>[] = [];
    const quorum = quorumOf(servers);
    let done = false;
    let settleTimer: ReturnType<typeof setTimeout> | undefined;
    const evaluate = (forced: boolean) => {
      if (done) return;
      const pending = servers - votes.length;
      const final = pending === 0 || forced;
      try {
        const result = decide({ votes, pending, quorum, final });
        if (result !== undefined) return finish(() => resolve(result));
        if (final) return finish(() => reject(new Error("quorum round ended without a decision")));
      } catch (error) {
        return finish(() => reject(error));
      }
      if (settleMs !== undefined && settleTimer === undefined && votes.length >= quorum) {
        settleTimer = setTimeout(() => evaluate(true), settleMs);
        settleTimer.unref();
      }
    };
    const finish = (settle: () => void) => {
      done = true;
      if (settleTimer !== undefined) clearTimeout(settleTimer);
      settle();
    };
    for (let index = 0; index < servers; index++) {
      let sent: Promise<T>;
      try {
        sent = send(index);
      } catch (error) {
        sent = Promise.reject(error);
      }
      sent.then(
        (value) => {
          votes.push({ index, ok: true, value });
          evaluate(false);
        },
        (error: unknown) => {
          votes.push({ index, ok: false, error });
          evaluate(false);
        },
      );
    }
  });
}

/** The errors among `votes`. */
export function failures<T>(votes: readonly Vote<T>[]): unknown[] {
  return votes.flatMap((v) => (v.ok ? [] : [v.error]));
}

/** An error saying why a round reached no quorum, with the servers' errors attached. */
export function noQuorum<T>(state: RoundState<T>, servers: number, detail = ""): Error {
  const errors = failures(state.votes);
  const message = `no quorum${detail} (${state.quorum} of ${servers} needed; ${errors.length} failed, ${state.pending} did not answer)`;
  return errors.length > 0 ? new AggregateError(errors, `${message}: ${errors.map(describe).join("; ")}`) : new Error(message);
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
