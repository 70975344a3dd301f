import { spawn } from "node:child_process";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import type { Arrival, Recorder } from "./recorder.js";
import type { RecorderReply, RecorderRequest } from "./recorder-process.js";

// No jest imports here.

/** A {@link Recorder} running in a child process; arrivals are copied over IPC. */
export interface RecorderProcess extends Recorder {
  /** Fetches every arrival recorded so far (arrivals() otherwise lags by up to `flushEveryMs`). */
  sync(): Promise<void>;
}

/**
 * startRecorderProcess starts test/support/recorder-process.ts as a child process and returns a
 * Recorder whose `now()` and arrival times are this process's `performance.now()` (the child's
 * arrival times shifted by the difference of the two time origins: a constant, so windows are
 * audited exactly on the child's clock). The child stamps arrivals on its own event loop, so a
 * stall of this process (spawning a server, compiling a module) cannot bunch them up.
 * `reset()` is not supported (start one per run).
 */
export async function startRecorderProcess(options: { flushEveryMs?: number; readyTimeoutMs?: number } = {}): Promise<RecorderProcess> {
  const script = join(__dirname, "recorder-process.ts");
  const child = spawn(process.execPath, ["--import", "tsx", script], { stdio: ["ignore", "ignore", "pipe", "ipc"] });
  let stderr = "";
  child.stderr?.on("data", (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-4000);
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const log: Arrival[] = [];
  const pending = new Map<number, () => void>();
  let nextId = 0;
  let shift = 0;
  const ready = new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the recorder process was not ready within ${options.readyTimeoutMs ?? 60_000} ms: ${stderr}`)), options.readyTimeoutMs ?? 60_000);
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`the recorder process exited (code ${code}, signal ${signal}): ${stderr}`));
    });
    child.on("message", (message: RecorderReply) => {
      if (message.type === "ready") {
        clearTimeout(timer);
        shift = message.timeOrigin - performance.timeOrigin;
        resolve(message.url);
        return;
      }
      for (const a of message.arrivals) {
        log.push({ ...a, t: a.t + shift, sentAt: a.sentAt === null ? null : a.sentAt + shift });
      }
      pending.get(message.id)?.();
      pending.delete(message.id);
    });
  });
  let url: string;
  try {
    url = await ready;
  } catch (error) {
    child.kill("SIGKILL");
    throw error;
  }
  const sync = (): Promise<void> =>
    new Promise<void>((resolve) => {
      if (!child.connected) return resolve();
      const id = nextId++;
      pending.set(id, resolve);
      child.send({ type: "flush", id } satisfies RecorderRequest);
    });
  const flusher = setInterval(() => void sync(), options.flushEveryMs ?? 100);
  return {
    url,
    now: () => performance.now(),
    arrivals: () => log.slice(),
    reset: () => {
      throw new Error("a recorder process cannot be reset: start a new one");
    },
    sync,
    stop: async () => {
      clearInterval(flusher);
      await sync();
      for (const resolve of pending.values()) resolve();
      pending.clear();
      if (child.connected) child.send({ type: "stop" } satisfies RecorderRequest);
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}
