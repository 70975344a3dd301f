// Preloaded into a worker process (NODE_OPTIONS=--import) by the wall-clock fault row: Date.now()
// and new Date() jump between +1 h and −1 h every 700 ms, as NTP steps or a bad RTC would. The
// monotonic clock (performance.now()) is untouched; the limiter must not notice.
const RealDate = globalThis.Date;
const realNow = RealDate.now.bind(RealDate);
let offset = 0;
globalThis.setInterval(() => {
  offset = offset > 0 ? -3_600_000 : 3_600_000;
}, 700).unref();
class JumpingDate extends RealDate {
  constructor(...args) {
    if (args.length === 0) super(realNow() + offset);
    else super(...args);
  }
  static now() {
    return realNow() + offset;
  }
}
globalThis.Date = JumpingDate;
