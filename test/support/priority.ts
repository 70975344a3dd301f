import { getPriority, setPriority } from "node:os";

/**
 * The nice value the harness runs its recorder and workers at, where permitted (root). They play
 * a service and clients on machines of their own; on a shared 2-core box a CPU-bound neighbour
 * (another test suite) otherwise delays their event loops by 100 ms and more — far beyond real
 * loopback jitter — and the zero-tolerance arrival audit would measure the test machine instead of
 * the limiter. Their own CPU use is small, so the raise costs the neighbours little.
 */
export const HARNESS_NICE = -10;

/**
 * raisePriority sets the nice value of process `pid`'s main thread (default: the calling thread)
 * to {@link HARNESS_NICE} when it is lower than the current one and the OS permits it. Returns a
 * function that restores the previous value (a no-op when nothing changed). Never throws.
 */
export function raisePriority(pid = 0): () => void {
  try {
    const before = getPriority(pid);
    if (before <= HARNESS_NICE) return () => undefined;
    setPriority(pid, HARNESS_NICE);
    return () => {
      try {
        setPriority(pid, before);
      } catch {
        // The process may have exited meanwhile.
      }
    };
  } catch {
    // Not root (EACCES) or the process is gone: run at normal priority.
    return () => undefined;
  }
}

/**
 * normalPriority sets process `pid`'s main thread back to nice 0 (children inherit a raised
 * priority from the thread that spawned them). Used while a worker starts up: compiling with tsx
 * is a CPU burst that must not starve the recorders and workers of other suites. Never throws.
 */
export function normalPriority(pid: number): void {
  try {
    if (getPriority(pid) < 0) setPriority(pid, 0);
  } catch {
    // The process is gone or the OS refuses: nothing to undo.
  }
}
