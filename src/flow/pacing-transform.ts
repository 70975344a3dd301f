import { Transform } from "node:stream";
import { ConfigError } from "../errors/config-error.js";
import { optionalSignal } from "../contract/validate.js";
import { costOf, type PaceOptions } from "./pace.js";

/**
 * createPacingTransform returns an object-mode Transform that passes each chunk on only once the
 * limiter admits it, for `stream.pipeline`. Its buffers hold one chunk each way
 * (`highWaterMark: 1`), so stream backpressure stops the source while a chunk waits for
 * admission. An abort or a limiter error destroys the stream with that error.
 */
export function createPacingTransform<T = unknown>(options: PaceOptions<T>): Transform {
  if (typeof options !== "object" || options === null) throw new ConfigError("createPacingTransform(options)", options, "an options object");
  const { limiter } = options;
  if (typeof limiter?.acquire !== "function") throw new ConfigError("createPacingTransform(options.limiter)", limiter, "a PartitionedRateLimiter");
  const signal = optionalSignal("createPacingTransform(options.signal)", options.signal);
  const cost = costOf<T>("createPacingTransform", options.cost);
  const priority = options.priority ?? 0;
  return new Transform({
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
      limiter.acquire(units, { signal, priority }).then(
        () => callback(null, chunk),
        (error: unknown) => callback(error instanceof Error ? error : new Error(String(error), { cause: error })),
      );
    },
  });
}
