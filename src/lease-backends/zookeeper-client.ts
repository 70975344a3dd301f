import type { Client, Stat } from "node-zookeeper-client";

/**
 * Promise forms of the node-zookeeper-client calls the ZooKeeper backend makes, and the facts
 * about that client it relies on (measured in test/integration/zookeeper-client.test.ts): a
 * session's requests are answered in the order they were sent (so reads sent after a write see
 * it), a multi-op transaction applies all its ops or none and names the failing op, and no
 * request is bounded by anything in the client (callers bound them, see backendCall).
 */

/** A znode's data and stat. */
export interface Node {
  readonly data: string;
  readonly stat: Stat;
}

/** One op of a transaction, as {@link multi} takes it. */
export type TxnOp =
  | { readonly op: "create"; readonly path: string; readonly data: string }
  | { readonly op: "set"; readonly path: string; readonly data: string; readonly version: number }
  | { readonly op: "check"; readonly path: string; readonly version: number }
  | { readonly op: "remove"; readonly path: string; readonly version: number };

/** What a transaction answered: the stat of each `set` op by index, or the index of the failing op. */
export type TxnResult = { readonly ok: true; readonly stats: ReadonlyMap<number, Stat> } | { readonly ok: false; readonly failed: number; readonly code: number };

/**
 * The ZooKeeper error codes the backend tells apart (the protocol's, as node-zookeeper-client's
 * `Exception` names them). Kept here so that only a session's creation loads the client module:
 * the entry can be required without its optional peer installed.
 */
export const Code = {
  RUNTIME_INCONSISTENCY: -2,
  NO_NODE: -101,
  BAD_VERSION: -103,
  NODE_EXISTS: -110,
  SESSION_EXPIRED: -112,
} as const;

/** The ZooKeeper error code of `error`, or undefined for another kind of error. */
export function zkCode(error: unknown): number | undefined {
  const e = error as { getCode?: unknown } | null;
  return typeof e === "object" && e !== null && typeof e.getCode === "function" ? (e.getCode as () => number)() : undefined;
}

/** getData; null when the node does not exist. */
export function getNode(client: Client, path: string): Promise<Node | null> {
  return new Promise((resolve, reject) =>
    client.getData(path, (error, data, stat) => {
      if (zkCode(error) === Code.NO_NODE) resolve(null);
      else if (error) reject(error);
      else resolve({ data: data ? data.toString() : "", stat });
    }),
  );
}

/** getChildren; empty when the node does not exist. */
export function children(client: Client, path: string): Promise<string[]> {
  return new Promise((resolve, reject) =>
    client.getChildren(path, (error, names) => {
      if (zkCode(error) === Code.NO_NODE) resolve([]);
      else if (error) reject(error);
      else resolve(names);
    }),
  );
}

/** setData without a version check; resolves the new stat (its mtime is the server's time of the write). */
export function touch(client: Client, path: string): Promise<Stat | null> {
  return new Promise((resolve, reject) =>
    client.setData(path, Buffer.alloc(0), -1, (error, stat) => {
      if (zkCode(error) === Code.NO_NODE) resolve(null);
      else if (error) reject(error);
      else resolve(stat);
    }),
  );
}

/** Creates every missing node of `path` (persistent, empty). */
export function mkdirp(client: Client, path: string): Promise<void> {
  return new Promise((resolve, reject) => client.mkdirp(path, (error) => (error ? reject(error) : resolve())));
}

/**
 * Commits `ops` as one multi-op transaction. A failed check or version (BAD_VERSION, NO_NODE,
 * NODE_EXISTS) resolves `{ ok: false }` with the failing op's index; other errors reject.
 */
export function multi(client: Client, ops: readonly TxnOp[]): Promise<TxnResult> {
  let txn = client.transaction();
  for (const o of ops) {
    if (o.op === "create") txn = txn.create(o.path, Buffer.from(o.data));
    else if (o.op === "set") txn = txn.setData(o.path, Buffer.from(o.data), o.version);
    else if (o.op === "check") txn = txn.check(o.path, o.version);
    else txn = txn.remove(o.path, o.version);
  }
  return new Promise((resolve, reject) =>
    txn.commit((error, results: { type: number; err?: number; stat?: Stat }[] | undefined) => {
      const code = zkCode(error);
      if (code === Code.BAD_VERSION || code === Code.NO_NODE || code === Code.NODE_EXISTS) {
        const failed = (results ?? []).findIndex((r) => r.err !== undefined && r.err !== 0 && r.err !== Code.RUNTIME_INCONSISTENCY);
        resolve({ ok: false, failed, code });
      } else if (error) {
        reject(error);
      } else {
        const stats = new Map<number, Stat>();
        (results ?? []).forEach((r, i) => {
          if (r.stat) stats.set(i, r.stat);
        });
        resolve({ ok: true, stats });
      }
    }),
  );
}

/** A zxid (or any 8-byte stat field) as a number; exact below 2^53 (ZooKeeper epochs below 2^21). */
export function long(buffer: Buffer): number {
  return Number(buffer.readBigInt64BE(0));
}
