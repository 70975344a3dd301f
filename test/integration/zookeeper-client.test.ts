import { performance } from "node:perf_hooks";
import { createClient, CreateMode, Exception, type Client, type Stat } from "node-zookeeper-client";
import { startZooKeeper, type ZooKeeperServer } from "../support/servers/zookeeper.js";
import { TcpProxy } from "../support/tcp-proxy.js";

// What a ZooKeeper lease backend can rely on in the chosen client, node-zookeeper-client (pure
// JavaScript; the native `zookeeper` package has no multi-op transactions), measured against a
// real standalone server started here (Debian's zookeeper package), or the one ZOOKEEPER_CONNECT
// names (its tickTime, minSessionTimeout and maxSessionTimeout must allow a 2 s session, within
// 100 ms ticks for the expiry bound). About 5-15 s, most of it the JVM.

let server: ZooKeeperServer;
const clients: Client[] = [];

beforeAll(async () => {
  server = await startZooKeeper();
}, 90_000);
afterAll(async () => {
  for (const c of clients) c.close();
  await server?.stop();
});

/** A connected client; rejects after 10 s instead of waiting for a server that never answers. */
async function connect(connectString: string, sessionTimeout = 2000): Promise<Client> {
  const client = createClient(connectString, { sessionTimeout, spinDelay: 100, retries: 0 });
  clients.push(client);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ZooKeeper session at ${connectString} within 10 s`)), 10_000);
    client.once("connected", () => {
      clearTimeout(timer);
      resolve();
    });
    client.connect();
  });
  return client;
}

/** Wraps one callback-style call in a promise. */
function call<T>(fn: (cb: (error: Error | Exception | null, value: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => fn((error, value) => (error ? reject(error) : resolve(value))));
}

const zxid = (buffer: Buffer): bigint => buffer.readBigInt64BE(0);
const codeOf = (error: unknown): number | undefined => (error instanceof Exception ? error.getCode() : undefined);

test("the session timeout is negotiated within the server's min/max and reported by getSessionTimeout()", async () => {
  const asked = await connect(server.connectString, 2000);
  expect(asked.getSessionTimeout()).toBe(2000);
  const tooShort = await connect(server.connectString, 50);
  // Below minSessionTimeout (2 ticks by default): the server raises what is asked for, the client reports it.
  expect(tooShort.getSessionTimeout()).toBe(server.minSessionTimeoutMs);
}, 30_000);

test("czxid grows with every create of a path (a fencing token), version counts writes, ephemeralOwner is the session", async () => {
  const client = await connect(server.connectString);
  await call<string>((cb) => client.mkdirp("/facts/fence", cb));
  await call<string>((cb) => client.create("/facts/fence/p0", Buffer.from("a"), CreateMode.EPHEMERAL, cb));
  const first = await call<Stat>((cb) => client.exists("/facts/fence/p0", cb));
  const taken = await call<string>((cb) => client.create("/facts/fence/p0", Buffer.from("b"), CreateMode.EPHEMERAL, cb)).catch(codeOf);
  expect(taken).toBe(Exception.NODE_EXISTS);
  const written = await call<Stat>((cb) => client.setData("/facts/fence/p0", Buffer.from("a2"), first.version, cb));
  expect(written.version).toBe(first.version + 1);
  expect(zxid(written.mzxid)).toBeGreaterThan(zxid(first.mzxid));
  await call<void>((cb) => client.remove("/facts/fence/p0", written.version, (e) => cb(e, undefined)));
  await call<string>((cb) => client.create("/facts/fence/p0", Buffer.from("c"), CreateMode.EPHEMERAL, cb));
  const second = await call<Stat>((cb) => client.exists("/facts/fence/p0", cb));
  expect(zxid(second.czxid)).toBeGreaterThan(zxid(first.czxid));
  expect(second.version).toBe(0);
  expect(second.ephemeralOwner.equals(client.getSessionId())).toBe(true);
}, 30_000);

test("multi is atomic: one failed check applies nothing, and the error names the failing op", async () => {
  const client = await connect(server.connectString);
  await call<string>((cb) => client.mkdirp("/facts/multi", cb));
  await call<string>((cb) => client.create("/facts/multi/plan", Buffer.from("plan-1"), CreateMode.PERSISTENT, cb));
  const plan = await call<Stat>((cb) => client.exists("/facts/multi/plan", cb));
  const failed = await new Promise<{ error: unknown; results: { type: number; err?: number }[] }>((resolve) =>
    client
      .transaction()
      .check("/facts/multi/plan", plan.version + 1)
      .create("/facts/multi/p0", Buffer.from("t"), CreateMode.EPHEMERAL)
      .commit((error, results: { type: number; err?: number }[]) => resolve({ error, results })),
  );
  expect(codeOf(failed.error)).toBe(Exception.BAD_VERSION);
  expect(failed.results.map((r) => r.err)).toEqual([Exception.BAD_VERSION, Exception.RUNTIME_INCONSISTENCY]);
  expect(await call<Stat | null>((cb) => client.exists("/facts/multi/p0", cb))).toBeNull();
  const ok = await call<{ type: number; path?: string }[]>((cb) =>
    client.transaction().check("/facts/multi/plan", plan.version).create("/facts/multi/p0", Buffer.from("t"), CreateMode.EPHEMERAL).commit(cb),
  );
  expect(ok[1]?.path).toBe("/facts/multi/p0");
}, 30_000);

test("an ephemeral node outlives its silent client by the session timeout (never less, at most a tick and a ping later)", async () => {
  const proxy = new TcpProxy(server.port);
  await proxy.start();
  try {
    const holder = await connect(`127.0.0.1:${proxy.port}`, 2000);
    const observer = await connect(server.connectString);
    await call<string>((cb) => holder.mkdirp("/facts/expiry", cb));
    await call<string>((cb) => holder.create("/facts/expiry/p0", Buffer.from("h"), CreateMode.EPHEMERAL, cb));
    const expired = new Promise<void>((resolve) => holder.once("expired", resolve));
    // The last request the holder sends before going silent; its session lives at least timeout past it.
    const lastSent = performance.now();
    await call<Stat>((cb) => holder.exists("/facts/expiry/p0", cb));
    // Held, not dropped: on heal the client's reconnect attempt (made when the server closed the
    // expired session's connection) reaches the server. The client has no handshake read timeout,
    // so a dropped handshake would leave it waiting for the server to give up on the connection.
    proxy.blackhole("hold");
    let goneAt = 0;
    for (;;) {
      const stat = await call<Stat | null>((cb) => observer.exists("/facts/expiry/p0", cb));
      if (!stat) {
        goneAt = performance.now();
        break;
      }
      if (performance.now() - lastSent > 10_000) throw new Error("the ephemeral node was still there 10 s after its client went silent");
      await new Promise((r) => setTimeout(r, 20));
    }
    const lifetime = goneAt - lastSent;
    process.stdout.write(`ZooKeeper: ephemeral node gone ${lifetime.toFixed(0)} ms after its client's last request (session timeout 2000 ms, tick ${server.tickMs} ms)\n`);
    expect(lifetime).toBeGreaterThanOrEqual(2000);
    // Pings every timeout / 3 may have refreshed the session just before the silence; expiry is on a tick boundary.
    expect(lifetime).toBeLessThanOrEqual(2000 + 2000 / 3 + 2 * server.tickMs + 300);
    // The client learns that its session expired only when it reaches the server again.
    proxy.heal();
    await expired;
    expect(holder.getState().name).toBe("EXPIRED");
    const afterExpiry = await call<Stat | null>((cb) => holder.exists("/", cb)).catch(codeOf);
    expect(afterExpiry).toBe(Exception.SESSION_EXPIRED);
  } finally {
    await proxy.stop();
  }
}, 30_000);

test("a request is bounded by nothing in the client: one abandoned by the caller's timeout still runs when the network heals", async () => {
  const proxy = new TcpProxy(server.port);
  await proxy.start();
  try {
    const client = await connect(`127.0.0.1:${proxy.port}`, 10_000);
    await call<string>((cb) => client.mkdirp("/facts/late", cb));
    proxy.blackhole("hold");
    const late = call<string>((cb) => client.create("/facts/late/p0", Buffer.from("late"), CreateMode.EPHEMERAL, cb));
    const abandoned = await Promise.race([late.then(() => "ran"), new Promise((r) => setTimeout(() => r("timed out"), 300))]);
    expect(abandoned).toBe("timed out");
    // Within the session timeout the session survives, and the create the caller gave up on happens.
    proxy.heal();
    expect(await late).toBe("/facts/late/p0");
    const stat = await call<Stat>((cb) => client.exists("/facts/late/p0", cb));
    expect(stat.ephemeralOwner.equals(client.getSessionId())).toBe(true);
  } finally {
    await proxy.stop();
  }
}, 30_000);
