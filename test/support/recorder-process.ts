/**
 * A recorder in a process of its own (started by `startRecorderProcess` in
 * recorder-process-client.ts as `node --import tsx test/support/recorder-process.ts`). It runs
 * {@link startRecorder}, reports "ready" with its URL and time origin, and answers "flush" with the
 * arrivals since the previous flush. Arrival times then never depend on the test process's event
 * loop, which spawning a server or compiling a module on the fly can block for 100 ms and more.
 */
import { performance } from "node:perf_hooks";
import { startRecorder, type Arrival } from "./recorder.js";

/** Messages from the parent. */
export type RecorderRequest = { readonly type: "flush"; readonly id: number } | { readonly type: "stop" };
/** Messages to the parent. */
export type RecorderReply =
  | { readonly type: "ready"; readonly url: string; readonly timeOrigin: number }
  | { readonly type: "arrivals"; readonly id: number; readonly arrivals: Arrival[] };

if (!process.send) {
  process.stderr.write("recorder-process.ts must be started with an IPC channel (startRecorderProcess)\n");
  process.exit(2);
}
const send = (message: RecorderReply): void => {
  if (process.connected) process.send!(message);
};

const recorder = await startRecorder();
let sent = 0;
process.on("message", (message: RecorderRequest) => {
  if (message.type === "flush") {
    const all = recorder.arrivals();
    send({ type: "arrivals", id: message.id, arrivals: all.slice(sent) });
    sent = all.length;
  } else {
    void recorder.stop().then(() => process.exit(0));
  }
});
// The parent went away: nothing is left to record for.
process.on("disconnect", () => process.exit(0));
send({ type: "ready", url: recorder.url, timeOrigin: performance.timeOrigin });
