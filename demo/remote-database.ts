import { fork } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Arrival, DatabaseState } from "./database.js";

/** The demo database running in a child process, driven over its HTTP control routes. */
export interface RemoteDatabase {
  /** `http://127.0.0.1:PORT`: where processors write. */
  readonly url: string;
  state(): Promise<DatabaseState>;
  arrivals(): Promise<Arrival[]>;
  reset(): Promise<void>;
  /** Stops the process (and waits for it to exit). */
  stop(): Promise<void>;
}

/** Starts demo/database-process.ts with the quota; rejects if it does not listen within 30 s. */
export async function startRemoteDatabase(quota: { limit: number; intervalMs: number }): Promise<RemoteDatabase> {
  const here = dirname(fileURLToPath(import.meta.url));
  const child = fork(join(here, "database-process.ts"), [JSON.stringify(quota)], { execArgv: ["--import", "tsx"], stdio: ["ignore", "inherit", "inherit", "ipc"] });
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the demo database did not start within 30 s")), 30_000);
    child.once("message", (m: { url: string }) => {
      clearTimeout(timer);
      resolve(m.url);
    });
    child.once("exit", (code) => reject(new Error(`the demo database exited during start-up (code ${code})`)));
  });
  const call = async (method: string, path: string): Promise<Response> => {
    const res = await fetch(`${url}${path}`, { method, signal: AbortSignal.timeout(30_000) });
    if (!res.ok) throw new Error(`database ${method} ${path}: HTTP ${res.status}`);
    return res;
  };
  return {
    url,
    state: async () => (await (await call("GET", "/state")).json()) as DatabaseState,
    arrivals: async () => (await (await call("GET", "/arrivals")).json()) as Arrival[],
    reset: async () => void (await call("POST", "/reset")),
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGKILL");
      await exited;
    },
  };
}
