import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensureBinary, ensureFile } from "../binaries.js";
import { freePort, waitForPort } from "../net.js";
import { TcpProxy } from "../tcp-proxy.js";
import { pollUntil, refuseIfExternalOnly, spawnChild, type ServerChild } from "./child.js";

// No jest imports here: scripts/test-external-servers.ts starts ZooKeeper with this module too.

/** A ZooKeeper server for tests: its connect string and fault controls. */
export interface ZooKeeperServer {
  /** `127.0.0.1:PORT`, the connect string of a client (`createClient(connectString)`). */
  readonly connectString: string;
  readonly port: number;
  /** Whether this module started the process (false: `ZOOKEEPER_CONNECT` was used). */
  readonly managed: boolean;
  /** The server's `tickTime`, in ms: sessions expire on tick boundaries, at most one tick late. */
  readonly tickMs: number;
  /** The shortest session timeout the server grants (`minSessionTimeout`), in ms. */
  readonly minSessionTimeoutMs: number;
  /** Stops the server (SIGTERM, SIGKILL after 3 s) and removes its data dir. */
  stop(): Promise<void>;
  /** SIGKILLs the server, as a crash; it stays down until {@link restart}. */
  kill(): Promise<void>;
  /** Freezes the server (SIGSTOP; a blackhole for `ZOOKEEPER_CONNECT`): connections stay open, nothing answers. */
  pause(): void;
  /** Thaws a paused server. */
  resume(): void;
  /**
   * Kills the server if running and starts it again on the same port. With its data (default)
   * sessions and ephemeral nodes survive (a session's timeout starts afresh at start-up); `wipe`
   * empties the data dir first (state loss: every node and session gone).
   */
  restart(options?: { wipe?: boolean }): Promise<void>;
  /** Sends a four-letter command (`srvr`, `mntr`, `cons`, `ruok`, …) and resolves the reply. */
  fourLetter(command: string, timeoutMs?: number): Promise<string>;
}

/** Options of {@link startZooKeeper}. */
export interface ZooKeeperOptions {
  /** The client port. Default: a free port. */
  readonly port?: number;
  /** `tickTime`, in ms. Default 100, so session expiry is precise to a tenth of a second. */
  readonly tickMs?: number;
  /** `minSessionTimeout` / `maxSessionTimeout`, in ms. Defaults 2 × tick and 60,000 (ZooKeeper's default maximum is 20 ticks). */
  readonly minSessionTimeoutMs?: number;
  readonly maxSessionTimeoutMs?: number;
  /** How long start-up may take, in ms (a JVM on a busy machine is slow). Default 60,000. */
  readonly startTimeoutMs?: number;
}

/** The environment variable naming an external ZooKeeper: a client connect string `host:port[,host:port…]`. */
export const ZOOKEEPER_ENV = "ZOOKEEPER_CONNECT";

/** Where Debian's `zookeeper` package puts the server jar (its manifest names the other jars). */
const JARS = ["/usr/share/java/zookeeper.jar", "/usr/share/zookeeper/zookeeper.jar"];

/**
 * startZooKeeper starts a ZooKeeper for a test: the first server of `ZOOKEEPER_CONNECT` if set,
 * behind a TcpProxy so {@link ZooKeeperServer.pause} can blackhole it (kill and restart then
 * throw); else a standalone server (`org.apache.zookeeper.server.ZooKeeperServerMain` from Debian's
 * `zookeeper` package, installed on first use when running as root; not the system service) as a
 * child process on a free 127.0.0.1 port with a data dir of its own and a short `tickTime`.
 * Rejects with a clear message if it does not serve within the start timeout; never hangs.
 */
export async function startZooKeeper(options: ZooKeeperOptions = {}): Promise<ZooKeeperServer> {
  const external = process.env[ZOOKEEPER_ENV];
  if (external) return externalServer(external);
  return launch(options);
}

/** Sends `command` to host:port and resolves everything the server writes before it closes. */
export function fourLetterWord(port: number, command: string, timeoutMs = 2000, host = "127.0.0.1"): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host });
    let reply = "";
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`ZooKeeper ${host}:${port} did not answer "${command}" within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once("connect", () => socket.write(command));
    socket.on("data", (chunk: Buffer) => (reply += chunk.toString()));
    socket.once("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.once("close", () => {
      clearTimeout(timer);
      resolve(reply);
    });
  });
}

async function externalServer(connectString: string): Promise<ZooKeeperServer> {
  const first = connectString.split(",")[0]?.trim().split("/")[0];
  if (!first) throw new Error(`${ZOOKEEPER_ENV} is set but names no server: ${JSON.stringify(connectString)}`);
  const [host, port] = first.includes(":") ? [first.slice(0, first.lastIndexOf(":")), Number(first.slice(first.lastIndexOf(":") + 1))] : [first, 2181];
  // The server's timings, from its `conf` four-letter command (it must be whitelisted).
  const conf = await fourLetterWord(port, "conf", 5000, host).catch((error: unknown) => {
    throw new Error(`ZooKeeper from ${ZOOKEEPER_ENV} (${first}) did not answer "conf" (whitelist it: 4lw.commands.whitelist=*): ${String(error)}`);
  });
  const setting = (name: string): number => {
    const value = Number(new RegExp(`^${name}=(\\d+)`, "m").exec(conf)?.[1]);
    if (!Number.isFinite(value)) throw new Error(`ZooKeeper from ${ZOOKEEPER_ENV} (${first}): no ${name} in its "conf" reply: ${conf.slice(0, 300)}`);
    return value;
  };
  const tickMs = setting("tickTime");
  const minSessionTimeoutMs = setting("minSessionTimeout");
  const proxy = new TcpProxy(port, host);
  const proxyPort = await proxy.start();
  const refuse = (what: string) => async (): Promise<void> => {
    throw new Error(`${what} is not possible on a ZooKeeper from ${ZOOKEEPER_ENV} (${connectString}); unset it to let the test start its own`);
  };
  return {
    connectString: `127.0.0.1:${proxyPort}`,
    port: proxyPort,
    managed: false,
    tickMs,
    minSessionTimeoutMs,
    stop: () => proxy.stop(),
    kill: refuse("kill"),
    pause: () => proxy.blackhole("hold"),
    resume: () => proxy.heal(),
    restart: refuse("restart"),
    fourLetter: (command, timeoutMs) => fourLetterWord(port, command, timeoutMs, host),
  };
}

async function launch(options: ZooKeeperOptions): Promise<ZooKeeperServer> {
  refuseIfExternalOnly("ZooKeeper", ZOOKEEPER_ENV);
  const jar = ensureFile(JARS, "zookeeper", ZOOKEEPER_ENV);
  const java = ensureBinary("java", "default-jre-headless", ZOOKEEPER_ENV);
  const port = options.port ?? (await freePort());
  const tickMs = options.tickMs ?? 100;
  const minSessionTimeoutMs = options.minSessionTimeoutMs ?? 2 * tickMs;
  const timeoutMs = options.startTimeoutMs ?? 60_000;
  const root = mkdtempSync(join(tmpdir(), "prl-zookeeper-"));
  const dataDir = join(root, "data");
  const config = join(root, "zoo.cfg");
  writeFileSync(
    config,
    [
      `tickTime=${tickMs}`,
      `dataDir=${dataDir}`,
      `clientPort=${port}`,
      "clientPortAddress=127.0.0.1",
      `minSessionTimeout=${minSessionTimeoutMs}`,
      `maxSessionTimeout=${options.maxSessionTimeoutMs ?? 60_000}`,
      "maxClientCnxns=0",
      "admin.enableServer=false",
      "4lw.commands.whitelist=*",
      // Snapshots and logs are small here; no purge task or preallocation needed.
      "preAllocSize=1024",
      "",
    ].join("\n"),
  );
  let child: ServerChild | null = null;

  const start = async (): Promise<void> => {
    mkdirSync(dataDir, { recursive: true });
    const proc = spawnChild(`ZooKeeper :${port}`, java, [
      // A small, quickly started JVM: tests need seconds of a light server, not throughput.
      "-Xms32m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto",
      "-Dzookeeper.admin.enableServer=false",
      "-cp", jar,
      "org.apache.zookeeper.server.ZooKeeperServerMain", config,
    ], { cwd: root });
    child = proc;
    try {
      await Promise.race([
        (async () => {
          await waitForPort(port, proc.what, timeoutMs);
          await pollUntil(`${proc.what} serving requests`, timeoutMs, async () => {
            const reply = await fourLetterWord(port, "srvr", 1000);
            if (!/Mode: standalone/.test(reply)) throw new Error(reply.trim() || "empty srvr reply");
            return true;
          });
        })(),
        proc.exited.then(() => {
          throw new Error(`${proc.what} exited during start-up: ${proc.output() || "no output"}`);
        }),
      ]);
    } catch (error) {
      await proc.kill();
      throw new Error(`${(error as Error).message}\n${proc.what} output:\n${proc.output()}`, { cause: error });
    }
  };

  const killNow = async (): Promise<void> => {
    await child?.kill();
    child = null;
  };

  await start().catch((error: unknown) => {
    rmSync(root, { recursive: true, force: true });
    throw error;
  });
  return {
    connectString: `127.0.0.1:${port}`,
    port,
    managed: true,
    tickMs,
    minSessionTimeoutMs,
    async stop() {
      await child?.stop();
      child = null;
      rmSync(root, { recursive: true, force: true });
    },
    kill: killNow,
    pause() {
      child?.proc.kill("SIGSTOP");
    },
    resume() {
      child?.proc.kill("SIGCONT");
    },
    async restart(opts = {}) {
      await killNow();
      if (opts.wipe) rmSync(dataDir, { recursive: true, force: true });
      await start();
    },
    fourLetter: (command, ms) => fourLetterWord(port, command, ms),
  };
}
