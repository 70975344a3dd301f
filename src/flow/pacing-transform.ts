import { Transform } from "node:stream";
import { ConfigError } from "../errors/config-error.js";
import { optionalSignal } from "../contract/validate.js";
import { costOf, type PaceOptions } from "./pace.js";

/**
 * createPacingTransform returns an object-mode Transform that passes each chunk on only once the
 * limiter admits it, for `stream.pipeline`. Its buffers hold one chunk each way
 * (`highWaterMark: 1`), so stream backpressure stops the source while a chunk waits for
 * admission. An abort of `signal` destroys the stream with `signal.reason`, also while it is idle;
 * destroying the stream (as `pipeline` does when another stream fails) withdraws the chunk's
 * pending `acquire`, so no units are admitted for a chunk that will never be passed on. A
 * limiter error destroys the stream with that error.
 */
export function createPacingTransform<T = unknown>(options: PaceOptions<T>): Transform {
  if (typeof options !== "object" || options === null) throw new ConfigError("createPacingTransform(options)", options, "an options object");
  const { limiter } = options;
  if (typeof limiter?.acquire !== "function") throw new ConfigError("createPacingTransform(options.limiter)", limiter, "a PartitionedRateLimiter");
  const signal = optionalSignal("createPacingTransform(options.signal)", options.signal);
  const cost = costOf<T>("createPacingTransform", options.cost);
  const priority = options.priority ?? 0;
  // Aborted on destroy (or by `signal`): ends the wait of the chunk in hand.
  const waiting = new AbortController();
  const transform = new Transform({
    objectMode: true,
    highWaterMark: 1,
    transform(chunk: T, _encoding, callback) {
      let units: number;
      try {
        units = cost(chunk);
      } catch (error) {
        callback(error as Error);
        return;
      }
      limiter.acquire(units, { signal: waiting.signal, priority }).then(
        () => callback(null, chunk),
        (error: unknown) => callback(error instanceof Error ? error : new Error(String(error), { cause: error })),
      );
    },
    destroy(error, callback) {
      signal?.removeEventListener("abort", onAbort);
      waiting.abort(error ?? new Error("the pacing transform was destroyed"));
      callback(error);
    },
  });
  const onAbort = (): void => {
    transform.destroy(signal!.reason instanceof Error ? signal!.reason : new Error(String(signal!.reason), { cause: signal!.reason }));
  };
  if (signal?.aborted) onAbort();
  else signal?.addEventListener("abort", onAbort, { once: true });
  return transform;
}
