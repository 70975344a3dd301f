import { createBackend, type BackendSpec } from "./backend-spec.js";
import { untilGranting } from "./servers/etcd.js";

// No jest imports here: used from beforeAll hooks and scenario starters alike.

/**
 * Waits until an etcd just started grants leases: its server clock must run backendEpochGraceMs
 * (about 61 s) first, see EtcdLeaseBackend. Tests whose scenario starts with a ramp call this so
 * the ramp measures the limiters, not the server's warm-up. Resolves to the wait, in ms.
 */
export async function warmUp(spec: BackendSpec & { kind: "etcd" }, ttlMs = 2000): Promise<number> {
  const direct = await createBackend(spec);
  try {
    return await untilGranting(direct.backend, ttlMs);
  } finally {
    await direct.close();
  }
}
