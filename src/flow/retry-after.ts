/** Options of {@link parseRetryAfter}. */
export interface ParseRetryAfterOptions {
  /** The wall-clock time an HTTP-date is measured from, in epoch ms. Default `Date.now()`. */
  nowMs?: number;
  /** Longer delays are capped to this many ms. Default 3,600,000 (one hour). */
  maxMs?: number;
}

const DELTA_SECONDS = /^\d+$/;
// RFC 9110 allows three date forms; `Date.parse` reads all of them, but also much else, so the
// shape is checked first (a weekday name, a comma or space, digits, a GMT zone).
const HTTP_DATE = /^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*,? [\w -]+ \d{1,2}:\d{2}:\d{2}(?: GMT| \d{4})$/i;

/**
 * parseRetryAfter reads an HTTP `Retry-After` value and returns the delay it asks for in ms, or
 * null when the value is missing or malformed. Delta-seconds (`"120"`) and HTTP-dates
 * (`"Wed, 21 Oct 2015 07:28:00 GMT"`) are accepted; a date in the past gives 0; anything longer
 * than `maxMs` is capped to it. Negative or fractional numbers and other garbage give null.
 * An HTTP-date is the only place wall-clock time enters flow control: it is compared with
 * `nowMs` once, then only the resulting duration is used.
 */
export function parseRetryAfter(value: string | null | undefined, options: ParseRetryAfterOptions = {}): number | null {
  if (typeof value !== "string") return null;
  const maxMs = options.maxMs ?? 3_600_000;
  const text = value.trim();
  if (text === "") return null;
  if (DELTA_SECONDS.test(text)) {
    // Very long digit strings overflow to Infinity, which the cap handles.
    return Math.min(Number(text) * 1000, maxMs);
  }
  if (!HTTP_DATE.test(text)) return null;
  // asctime() dates carry no zone; HTTP dates are always GMT, so say so rather than read local time.
  const at = Date.parse(/\d{4}$/.test(text) ? `${text} GMT` : text);
  if (Number.isNaN(at)) return null;
  return Math.min(Math.max(0, at - (options.nowMs ?? Date.now())), maxMs);
}
