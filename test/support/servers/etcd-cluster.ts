import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensureBinary } from "../binaries.js";
import { freePort, waitForPort } from "../net.js";
import { pollUntil, refuseIfExternalOnly, spawnChild, type ServerChild } from "./child.js";

// No jest imports here: scripts/test-external-servers.ts starts a cluster with this module too.

/** What one member's `Maintenance/Status` reports (ids are decimal uint64 strings). */
export interface EtcdMemberStatus {
  readonly endpoint: string;
  readonly clusterId: string;
  readonly memberId: string;
  /** The member id of the leader this member follows. */
  readonly leader: string;
  readonly revision: number;
  readonly raftTerm: number;
}

/** A three-member etcd cluster for tests: endpoints and fault controls. */
export interface EtcdCluster {
  /** Client URLs of every member, `http://127.0.0.1:PORT`: pass them all to `new Etcd3({ hosts })`. */
  readonly endpoints: readonly string[];
  /** Whether this module started the processes (false: `ETCD_CLUSTER_ENDPOINTS` was used). */
  readonly managed: boolean;
  /** The status of every member that answers (a killed one is left out). */
  status(): Promise<EtcdMemberStatus[]>;
  /** Index (into {@link endpoints}) of the member that every answering member names as leader. */
  leader(timeoutMs?: number): Promise<number>;
  /** SIGKILLs member `index`, as a crash; it stays down until {@link restart}. */
  kill(index: number): Promise<void>;
  /** Freezes member `index` (SIGSTOP). */
  pause(index: number): void;
  /** Thaws it (SIGCONT). */
  resume(index: number): void;
  /** Starts member `index` again with its data dir (kills it first if running); waits until it serves. */
  restart(index: number): Promise<void>;
  /** Waits until every running member agrees on one leader and serves; resolves the leader's index. */
  waitHealthy(timeoutMs?: number): Promise<number>;
  /** `etcdctl snapshot save` from a healthy member into `file`. */
  snapshotSave(file: string): Promise<void>;
  /**
   * Stops every member, replaces each data dir by `etcdctl snapshot restore <file>` with
   * `--initial-cluster-token token` (a new token makes new member ids and so a new cluster id; the
   * same token as at start keeps them) and starts the cluster again; waits until it is healthy.
   */
  restoreSnapshot(file: string, token: string): Promise<void>;
  /** The `--initial-cluster-token` the cluster was started with. */
  readonly token: string;
  /** Stops every member and removes the data dirs (a no-op for `ETCD_CLUSTER_ENDPOINTS`). */
  stop(): Promise<void>;
}

/** Options of {@link startEtcdCluster}. */
export interface EtcdClusterOptions {
  /** Client ports of the three members. Default: free ports. */
  readonly clientPorts?: readonly number[];
  /** Peer ports of the three members. Default: free ports. */
  readonly peerPorts?: readonly number[];
  /**
   * `--heartbeat-interval`, in ms. Default 100 (etcd's default). Shorter timings make a failover
   * faster, but on a busy 2-core machine 50/500 let followers miss heartbeats and hold elections
   * in the middle of a test.
   */
  readonly heartbeatMs?: number;
  /** `--election-timeout`, in ms: a follower starts an election after this long without the leader. Default 1,000 (etcd's default). */
  readonly electionMs?: number;
  /** How long start-up may take, in ms. Default 60,000. */
  readonly startTimeoutMs?: number;
}

/** Comma-separated client URLs of an external three-member cluster. */
export const ETCD_CLUSTER_ENV = "ETCD_CLUSTER_ENDPOINTS";

/**
 * startEtcdCluster starts a three-member etcd cluster for a test: the one named by
 * `ETCD_CLUSTER_ENDPOINTS` if set (fault controls then throw), else three `etcd` processes
 * (Debian `etcd-server`, 3.4) on 127.0.0.1 with `--initial-cluster-state new`, a fresh cluster
 * token and etcd's default raft timings, and waits until all three agree on a leader. Snapshots need
 * `etcdctl` (Debian `etcd-client`), installed on first use when running as root.
 */
export async function startEtcdCluster(options: EtcdClusterOptions = {}): Promise<EtcdCluster> {
  const external = process.env[ETCD_CLUSTER_ENV];
  if (external) return externalCluster(external);
  return launchCluster(options);
}

interface RawStatus {
  header?: { cluster_id?: string; member_id?: string; revision?: string; raft_term?: string };
  leader?: string;
}

/** One member's status through the gRPC gateway (`POST /v3/maintenance/status`), bounded by `timeoutMs`. */
export async function memberStatus(endpoint: string, timeoutMs = 1000): Promise<EtcdMemberStatus> {
  const response = await fetch(`${endpoint}/v3/maintenance/status`, { method: "POST", body: "{}", signal: AbortSignal.timeout(timeoutMs) });
  if (!response.ok) throw new Error(`${endpoint}: status ${response.status} ${await response.text()}`);
  const raw = (await response.json()) as RawStatus;
  return {
    endpoint,
    clusterId: raw.header?.cluster_id ?? "",
    memberId: raw.header?.member_id ?? "",
    leader: raw.leader ?? "",
    revision: Number(raw.header?.revision ?? 0),
    raftTerm: Number(raw.header?.raft_term ?? 0),
  };
}

async function statuses(endpoints: readonly string[]): Promise<EtcdMemberStatus[]> {
  const all = await Promise.all(endpoints.map((e) => memberStatus(e).catch(() => null)));
  return all.filter((s): s is EtcdMemberStatus => s !== null);
}

/** The leader's index once every answering member (at least `quorum`) names the same, answering leader. */
async function agreedLeader(endpoints: readonly string[], quorum: number): Promise<number> {
  const answered = await statuses(endpoints);
  if (answered.length < quorum) throw new Error(`only ${answered.length} of ${endpoints.length} members answer`);
  const leaders = new Set(answered.map((s) => s.leader));
  const [leader] = [...leaders];
  if (leaders.size !== 1 || !leader || leader === "0") throw new Error(`members name leaders ${JSON.stringify([...leaders])}`);
  const index = endpoints.findIndex((e) => answered.find((s) => s.endpoint === e)?.memberId === leader);
  if (index < 0) throw new Error(`the leader ${leader} does not answer`);
  return index;
}

function externalCluster(list: string): EtcdCluster {
  const endpoints = list
    .split(",")
    .map((e) => e.trim())
    .filter(Boolean)
    .map((e) => (e.includes("://") ? e : `http://${e}`));
  if (endpoints.length === 0) throw new Error(`${ETCD_CLUSTER_ENV} is set but lists no endpoint: ${JSON.stringify(list)}`);
  const refuse = (what: string): never => {
    throw new Error(`${what} is not possible on an etcd cluster from ${ETCD_CLUSTER_ENV} (${list}); unset it to let the test start its own`);
  };
  return {
    endpoints,
    managed: false,
    token: "",
    status: () => statuses(endpoints),
    leader: (ms = 10_000) => pollUntil("the etcd members agreeing on a leader", ms, () => agreedLeader(endpoints, Math.floor(endpoints.length / 2) + 1)),
    kill: async () => refuse("kill"),
    pause: () => refuse("pause"),
    resume: () => refuse("resume"),
    restart: async () => refuse("restart"),
    waitHealthy: (ms = 10_000) => pollUntil("the etcd members agreeing on a leader", ms, () => agreedLeader(endpoints, endpoints.length)),
    snapshotSave: async () => refuse("snapshotSave"),
    restoreSnapshot: async () => refuse("restoreSnapshot"),
    stop: async () => undefined,
  };
}

function run(binary: string, args: readonly string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(binary, [...args], { timeout: timeoutMs, env: { ...process.env, ETCDCTL_API: "3" } }, (error, stdout, stderr) =>
      error ? reject(new Error(`${binary} ${args.join(" ")} failed: ${error.message}\n${stdout}\n${stderr}`)) : resolve(stdout),
    );
  });
}

async function launchCluster(options: EtcdClusterOptions): Promise<EtcdCluster> {
  refuseIfExternalOnly("etcd cluster", ETCD_CLUSTER_ENV);
  const binary = ensureBinary("etcd", "etcd-server", ETCD_CLUSTER_ENV);
  const clientPorts = options.clientPorts ? [...options.clientPorts] : await Promise.all([freePort(), freePort(), freePort()]);
  const peerPorts = options.peerPorts ? [...options.peerPorts] : await Promise.all([freePort(), freePort(), freePort()]);
  if (clientPorts.length !== 3 || peerPorts.length !== 3) throw new Error("startEtcdCluster: clientPorts and peerPorts must list 3 ports each");
  const timeoutMs = options.startTimeoutMs ?? 60_000;
  const root = mkdtempSync(join(tmpdir(), "prl-etcd-cluster-"));
  const names = clientPorts.map((_, i) => `m${i}`);
  const endpoints = clientPorts.map((p) => `http://127.0.0.1:${p}`);
  const peers = peerPorts.map((p) => `http://127.0.0.1:${p}`);
  const initialCluster = names.map((n, i) => `${n}=${peers[i]}`).join(",");
  const dataDir = (i: number) => join(root, names[i]!);
  let token = `prl-${process.pid}-${Date.now().toString(36)}`;
  const children: (ServerChild | null)[] = [null, null, null];

  const spawnMember = (i: number): ServerChild => {
    const child = spawnChild(`etcd ${names[i]} :${clientPorts[i]}`, binary, [
      "--name", names[i]!,
      "--data-dir", dataDir(i),
      "--listen-client-urls", endpoints[i]!,
      "--advertise-client-urls", endpoints[i]!,
      "--listen-peer-urls", peers[i]!,
      "--initial-advertise-peer-urls", peers[i]!,
      "--initial-cluster", initialCluster,
      "--initial-cluster-state", "new",
      "--initial-cluster-token", token,
      "--heartbeat-interval", String(options.heartbeatMs ?? 100),
      "--election-timeout", String(options.electionMs ?? 1000),
      "--logger", "zap",
      "--log-level", "error",
    ]);
    children[i] = child;
    return child;
  };
  const waitServing = async (i: number, child: ServerChild): Promise<void> => {
    await Promise.race([
      waitForPort(clientPorts[i]!, child.what, timeoutMs),
      child.exited.then(() => {
        throw new Error(`${child.what} exited during start-up: ${child.output() || "no output"}`);
      }),
    ]);
  };
  const running = () => endpoints.filter((_, i) => children[i]?.alive);
  const healthy = (ms: number) =>
    pollUntil("the etcd members agreeing on a leader", ms, async () => {
      const live = running();
      const leader = await agreedLeader(live, live.length);
      return endpoints.indexOf(live[leader]!);
    }, 50);
  const startAll = async () => {
    const started = [0, 1, 2].map(spawnMember);
    await Promise.all(started.map((c, i) => waitServing(i, c)));
    await healthy(timeoutMs);
  };
  const stopAll = async () => {
    await Promise.all(children.map((c) => c?.stop()));
  };
  const member = (i: number): ServerChild => {
    const child = children[i];
    if (!child) throw new Error(`no etcd member ${i} (members 0-2)`);
    return child;
  };

  try {
    await startAll();
  } catch (error) {
    const outputs = children.map((c) => (c ? `${c.what}: ${c.output() || "no output"}` : "")).join("\n");
    await stopAll();
    rmSync(root, { recursive: true, force: true });
    throw new Error(`${(error as Error).message}\n${outputs}`, { cause: error });
  }

  return {
    endpoints,
    managed: true,
    get token() {
      return token;
    },
    status: () => statuses(running()),
    leader: async (ms = 10_000) =>
      pollUntil("the etcd members agreeing on a leader", ms, async () => {
        const live = running();
        return endpoints.indexOf(live[await agreedLeader(live, 2)]!);
      }, 50),
    kill: (i) => member(i).kill(),
    pause: (i) => void member(i).proc.kill("SIGSTOP"),
    resume: (i) => void member(i).proc.kill("SIGCONT"),
    async restart(i) {
      await member(i).kill();
      const child = spawnMember(i);
      await waitServing(i, child);
    },
    waitHealthy: (ms = 30_000) => healthy(ms),
    async snapshotSave(file) {
      const etcdctl = ensureBinary("etcdctl", "etcd-client", ETCD_CLUSTER_ENV);
      const leader = await healthy(10_000);
      await run(etcdctl, ["--endpoints", endpoints[leader]!, "snapshot", "save", file], 30_000);
    },
    async restoreSnapshot(file, newToken) {
      const etcdctl = ensureBinary("etcdctl", "etcd-client", ETCD_CLUSTER_ENV);
      await stopAll();
      for (let i = 0; i < 3; i++) {
        rmSync(dataDir(i), { recursive: true, force: true });
        await run(
          etcdctl,
          [
            "snapshot", "restore", file,
            "--name", names[i]!,
            "--data-dir", dataDir(i),
            "--initial-cluster", initialCluster,
            "--initial-cluster-token", newToken,
            "--initial-advertise-peer-urls", peers[i]!,
          ],
          30_000,
        );
      }
      token = newToken;
      await startAll();
    },
    async stop() {
      await stopAll();
      rmSync(root, { recursive: true, force: true });
    },
  };
}
