/**
 * BackendUnreachableError: the CLI could not reach a backend's server, or a call to it failed.
 * The message names the backend, the host and port, and the cause in the system's words, e.g.
 * `redis 127.0.0.1:6390: connect ECONNREFUSED` or
 * `etcd 127.0.0.1:2379: readPlan failed: deadline exceeded`. The CLI exits with status 4.
 */
export class BackendUnreachableError extends Error {
  /**
   * Creates the error; `where` is e.g. `redis 127.0.0.1:6390`, `cause` the failure behind it, and
   * `operation` the backend call that failed, if it was one.
   */
  constructor(where: string, cause: unknown, operation?: string) {
    super(`${where}: ${operation === undefined ? "" : `${operation} failed: `}${describeCause(cause)}`, { cause });
    this.name = "BackendUnreachableError";
  }

  /** Several servers failed (all etcd hosts, a Redlock majority): `summary`, then each one's error. */
  static ofServers(where: string, summary: string, failures: readonly BackendUnreachableError[]): BackendUnreachableError {
    const error = new BackendUnreachableError(where, new AggregateError(failures, summary));
    error.message = `${where}: ${summary}: ${failures.map((f) => f.message).join("; ")}`;
    return error;
  }
}

/**
 * The shortest faithful account of a failure: for a system error (refused, timed out, unknown
 * host, reset) its `syscall` and `code`, e.g. `connect ECONNREFUSED`, found through `cause`
 * chains and aggregate errors; otherwise the innermost message.
 */
export function describeCause(error: unknown): string {
  const system = findSystemError(error, 0);
  if (system !== null) return system;
  let inner = error;
  for (let depth = 0; depth < 8 && inner instanceof Error && inner.cause !== undefined; depth++) inner = inner.cause;
  const message = inner instanceof Error ? inner.message : String(inner);
  return message.trim() || (inner instanceof Error ? inner.name : "unknown error");
}

function findSystemError(error: unknown, depth: number): string | null {
  if (depth > 8 || typeof error !== "object" || error === null) return null;
  const { code, syscall, errors, cause } = error as { code?: unknown; syscall?: unknown; errors?: unknown; cause?: unknown };
  if (typeof code === "string" && /^E[A-Z]+$/.test(code)) return typeof syscall === "string" ? `${syscall} ${code}` : code;
  if (Array.isArray(errors)) {
    for (const e of errors) {
      const found = findSystemError(e, depth + 1);
      if (found !== null) return found;
    }
  }
  return findSystemError(cause, depth + 1);
}
