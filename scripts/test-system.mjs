#!/usr/bin/env node
/**
 * The system pass of `npm test`: jest's "system" project, one file at a time, in one lane by
 * default (`PRL_SYSTEM_LANES=2` for two lanes side by side).
 *
 * Two lanes split the files in two: a waiting lane of files that spend much of their time waiting
 * out a server's grace (a fresh or restarted etcd's server clock, a wiped ZooKeeper's or Azurite's
 * plan, the README examples' settle time), and a busy lane of the rest. On the 2-core CI machine
 * two lanes took 1000 s against about 1800 s for one, but the busy lane failed: arrival audits
 * found windows of 100.5-105.5% (arrival delays beyond the jitterMs the tests declare), a
 * Redlock row's timing assumption broke and a 10 ms latency bound measured 10.4 ms. One lane is
 * the default because the promise's audits have zero tolerance; two are for a machine with cores
 * to spare.
 *
 * Extra arguments go to every jest run (`-t`, `--ci`, ...). Each runs with `--forceExit`: a
 * handle that a failed test left open once kept the pass alive until CI's 5400 s timeout. A lane
 * still running after PRL_LANE_TIMEOUT_S (default 3600 s) is killed and reported as failed.
 * Exit status: 0 when every lane passed, else the first non-zero one.
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(fileURLToPath(import.meta.url), "../..");
const jest = resolve(root, "node_modules/jest/bin/jest.js");

/** The waiting lane of PRL_SYSTEM_LANES=2, heaviest first (measured seconds on the 2-core machine, one at a time). */
const WAITING = [
  "test/faults/etcd-faults.test.ts", // 170: 61 s warm-up, the wiped server's 61 s grace
  "test/faults/etcd-cluster-faults.test.ts", // 167: 61 s warm-up, 61 s grace after the first leader change
  "test/integration/readme-examples.test.ts", // 133: 63 s until every server is past the creation grace
  "test/faults/zookeeper-faults.test.ts", // 105: the wiped server's 61 s grace
  "test/integration/etcd-cluster.integration.test.ts", // 85: 61 s warm-up
  "test/integration/etcd.integration.test.ts", // 80: 61 s warm-up
  "test/faults/azure-blob-faults.test.ts", // 55: a TTL of 15 s per row
  "test/integration/azure-blob.integration.test.ts", // 36: a takeover waits a 15 s lease out
  "test/faults/redlock-faults.test.ts", // 36: graces of restarted servers
  "test/integration/etcd-snapshot-restore.test.ts", // 22: etcd restores
  "test/integration/zookeeper.integration.test.ts", // 18
  "test/integration/consumers-amqp.test.ts", // 4
  "test/integration/zookeeper-client.test.ts", // 4
];

const listed = spawnSync(process.execPath, [jest, "--selectProjects", "system", "--listTests"], { cwd: root, encoding: "utf8" });
if (listed.status !== 0) {
  process.stderr.write(listed.stderr);
  process.exit(listed.status ?? 1);
}
const all = listed.stdout.split("\n").filter((line) => line.endsWith(".ts")).map((file) => relative(root, file));
const missing = WAITING.filter((file) => !existsSync(resolve(root, file)) || !all.includes(file));
if (missing.length > 0) {
  process.stderr.write(`scripts/test-system.mjs: the waiting lane names files jest's system project does not have: ${missing.join(", ")}\n`);
  process.exit(1);
}
const busy = all.filter((file) => !WAITING.includes(file));
const extra = process.argv.slice(2);
const LANE_TIMEOUT_S = Number(process.env.PRL_LANE_TIMEOUT_S ?? 3600);
const LANES = Number(process.env.PRL_SYSTEM_LANES ?? 1);
if (LANES !== 1 && LANES !== 2) {
  process.stderr.write(`scripts/test-system.mjs: PRL_SYSTEM_LANES must be 1 or 2, got ${JSON.stringify(process.env.PRL_SYSTEM_LANES)}\n`);
  process.exit(2);
}

/** The lanes' process groups, killed with this script (they are detached so that the watchdog can kill a whole lane). */
const groups = new Set();
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.once(signal, () => {
    for (const pid of groups) {
      try {
        process.kill(-pid, "SIGTERM");
      } catch {
        // already gone
      }
    }
    process.exit(130);
  });
}

/** Runs one lane; resolves to its exit status. */
function lane(name, files) {
  return new Promise((resolveStatus) => {
    const started = Date.now();
    // Paths as regular expressions: jest treats positional arguments as patterns.
    const patterns = files.map((file) => `${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`);
    const child = spawn(process.execPath, [jest, "--selectProjects", "system", "--maxWorkers=1", "--forceExit", ...extra, ...patterns], { cwd: root, stdio: "inherit", detached: true });
    groups.add(child.pid);
    let timedOut = false;
    const watchdog = setTimeout(() => {
      timedOut = true;
      process.stderr.write(`\n[test-system] ${name} lane still running after ${LANE_TIMEOUT_S} s (PRL_LANE_TIMEOUT_S): killing it and its servers\n`);
      try {
        process.kill(-child.pid, "SIGKILL"); // the lane's process group: jest, its workers, the servers they started
      } catch {
        child.kill("SIGKILL");
      }
    }, LANE_TIMEOUT_S * 1000);
    child.once("exit", (code, signal) => {
      clearTimeout(watchdog);
      groups.delete(child.pid);
      const status = timedOut ? 124 : (code ?? (signal ? 1 : 0));
      process.stdout.write(`\n[test-system] ${name} lane (${files.length} files): ${status === 0 ? "passed" : `FAILED (exit ${status})`} in ${Math.round((Date.now() - started) / 1000)} s\n`);
      resolveStatus(status);
    });
  });
}

let statuses;
if (LANES === 1) {
  process.stdout.write(`[test-system] one lane: ${all.length} files, one at a time\n`);
  statuses = [await lane("system", all)];
} else {
  process.stdout.write(`[test-system] busy lane: ${busy.length} files; waiting lane: ${WAITING.length} files; side by side\n`);
  statuses = await Promise.all([lane("busy", busy), lane("waiting", WAITING)]);
}
process.exit(statuses.find((s) => s !== 0) ?? 0);
