import { randomUUID } from "node:crypto";
import {
  BlobServiceClient,
  ContainerClient,
  StorageSharedKeyCredential,
  newPipeline,
  type RequestPolicyFactory,
} from "@azure/storage-blob";
import { AzureBlobLeaseBackend } from "../../src/lease-backends/azure-blob.js";
import { BackendError } from "../../src/errors/backend-error.js";
import { ConfigError } from "../../src/errors/config-error.js";
import { PlanMissingError } from "../../src/errors/plan-missing-error.js";
import { TimeoutError } from "../../src/errors/timeout-error.js";
import type { AcquireResult, HeartbeatResult, HolderRecord, Lease } from "../../src/contract/lease-backend.js";
import { encodeStoredPlan, storedPlanDigest, validatePlan, type StoredPlan } from "../../src/contract/plan.js";
import { creationGraceMs, switchGraceMs } from "../../src/contract/timing.js";
import { launchAzurite, type AzuriteServer } from "../support/servers/azurite.js";

const TTL = 15_000;
const PLAN = validatePlan({ limit: 100, intervalMs: 1000, partitions: 4, leaseTtlMs: TTL });
/** PLAN as every beforeEach stores it; requests carry the whole stored plan, not just its epoch. */
const STORED: StoredPlan = { plan: PLAN, epoch: 1 };
const T = { timeoutMs: 5000 };

let server: AzuriteServer;
const containerName = `unit-${randomUUID().slice(0, 8)}`;
/** Every HTTP request the counted client sent, as "METHOD comp" (e.g. "PUT lease", "GET list"). */
const requests: string[] = [];
/** Runs before a counted request is sent, to change the server between two requests of one call. */
let beforeSend: ((label: string, url: string) => Promise<void>) | undefined;

/** A container client whose pipeline records each request on the wire (innermost policy, after retries). */
function countedContainer(retry = { maxTries: 1, tryTimeoutInMs: 10_000 }): ContainerClient {
  const field = (name: string) => new RegExp(`${name}=([^;]+)`).exec(server.connectionString)?.[1] ?? "";
  const pipeline = newPipeline(new StorageSharedKeyCredential(field("AccountName"), field("AccountKey")), { retryOptions: retry });
  const counter: RequestPolicyFactory = {
    create: (next) => ({
      sendRequest: async (request) => {
        const label = `${request.method} ${new URL(request.url).searchParams.get("comp") ?? "blob"}`;
        requests.push(label);
        await beforeSend?.(label, request.url);
        return next.sendRequest(request);
      },
    }),
  };
  pipeline.factories.push(counter);
  return new ContainerClient(`${field("BlobEndpoint")}/${containerName}`, pipeline);
}

/** An uncounted client of the same container, for writing blobs by hand. */
function rawContainer(): ContainerClient {
  return BlobServiceClient.fromConnectionString(server.connectionString, { retryOptions: { maxTries: 1 } }).getContainerClient(containerName);
}

let backend: AzureBlobLeaseBackend;
let resource: string;
/** When the witness blob was created (the first plan of the container), by this process's clock. */
let witnessCreatedAt: number;

/** Runs `fn` and returns the requests it sent. */
async function counted<R>(fn: () => Promise<R>): Promise<{ result: R; sent: string[] }> {
  requests.length = 0;
  const result = await fn();
  return { result, sent: [...requests] };
}

const sorted = (labels: string[]) => [...labels].sort();
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

function acquire(candidates: number[], holderId = "h", res = resource, plan = STORED, b = backend): Promise<AcquireResult> {
  return b.tryAcquire({ resource: res, plan, candidates, holderId }, T);
}

async function lease(candidates: number[], holderId = "h", res = resource, plan = STORED): Promise<Lease> {
  const result = await acquire(candidates, holderId, res, plan);
  if (result.kind !== "granted") throw new Error(`expected a grant, got ${JSON.stringify(result)}`);
  return result.lease;
}

function record(holderId: string, held: number[] = [], extra: Partial<HolderRecord> = {}): HolderRecord {
  return { holderId, pool: null, wants: held.length, weight: 1, reserve: 0, held, demand: 0, rate: 0, ...extra };
}

function heartbeat(holderId: string, leases: Lease[], res = resource, plan = STORED, held = leases.map((l) => l.partition)): Promise<HeartbeatResult> {
  return backend.heartbeat({ resource: res, plan, holder: record(holderId, held), leases }, T);
}

const newResource = () => `unit-${randomUUID().slice(0, 8)}`;

beforeAll(async () => {
  // Its own Azurite whatever AZURE_STORAGE_CONNECTION_STRING says: these tests kill and restart it.
  server = await launchAzurite();
  backend = new AzureBlobLeaseBackend({ containerClient: countedContainer() });
  // The container's first plan creates the witness blob.
  await backend.ensurePlan(newResource(), PLAN, { history: "fresh", ...T });
  witnessCreatedAt = Date.now();
});
afterAll(async () => {
  await server?.stop();
});
beforeEach(async () => {
  resource = newResource();
  await backend.ensurePlan(resource, PLAN, { history: "fresh", ...T });
});
afterEach(() => {
  beforeSend = undefined;
});

describe("AzureBlobLeaseBackend lease TTLs", () => {
  test("leaseTtlRule and validateTtl accept whole seconds from 15 to 60 s and name leaseTtlMs and the range otherwise", () => {
    expect(backend.leaseTtlRule).toMatchObject({ minMs: 15_000, maxMs: 60_000, stepMs: 1000 });
    for (let ms = 15_000; ms <= 60_000; ms += 1000) expect(AzureBlobLeaseBackend.validateTtl(ms)).toBe(ms / 1000);
    for (const bad of [14_000, 61_000, 15_500, 0, -15_000, Number.NaN, Infinity]) {
      expect(() => AzureBlobLeaseBackend.validateTtl(bad)).toThrow(ConfigError);
    }
    let caught: unknown;
    try {
      AzureBlobLeaseBackend.validateTtl(10_000);
    } catch (error) {
      caught = error;
    }
    expect(ConfigError.is(caught) && caught.option).toBe("leaseTtlMs");
    expect((caught as Error).message).toMatch(/15000 to 60000 ms/);
  });

  test("every call with a TTL Azure cannot grant rejects with ConfigError before any request", async () => {
    const short = validatePlan({ ...PLAN, leaseTtlMs: 10_000 });
    // The TTL of tryAcquire and heartbeat is the request plan's.
    const tooShort: StoredPlan = { plan: validatePlan({ ...PLAN, leaseTtlMs: 1000 }), epoch: 1 };
    const fractional: StoredPlan = { plan: validatePlan({ ...PLAN, leaseTtlMs: 15_500 }), epoch: 1 };
    const { sent } = await counted(async () => {
      await expect(backend.tryAcquire({ resource, plan: tooShort, candidates: [0], holderId: "h" }, T)).rejects.toBeInstanceOf(ConfigError);
      await expect(backend.heartbeat({ resource, plan: fractional, holder: record("h"), leases: [] }, T)).rejects.toBeInstanceOf(ConfigError);
      await expect(backend.ensurePlan(newResource(), short, T)).rejects.toBeInstanceOf(ConfigError);
      await expect(backend.replacePlan(resource, short, T)).rejects.toBeInstanceOf(ConfigError);
    });
    expect(sent).toEqual([]);
  });
});

describe("AzureBlobLeaseBackend requests per operation", () => {
  test("ensurePlan: 1 when the plan exists; creating one: read, listing, witness, plan = 4, + grace blob and lease = 6 for a grace up to 60 s", async () => {
    expect((await counted(() => backend.ensurePlan(resource, PLAN, T))).sent).toEqual(["GET blob"]);
    const fresh = await counted(() => backend.ensurePlan(newResource(), PLAN, { history: "fresh", ...T }));
    expect(fresh.sent).toEqual(["GET blob", "GET list", "HEAD blob", "PUT blob"]);
    // The witness is younger than any grace here, so every history but "fresh" gets its full creation grace.
    const lost = newResource();
    const lostGrace = creationGraceMs(PLAN, "lost");
    expect(lostGrace).toBeLessThanOrEqual(60_000);
    const arming = await counted(() => backend.ensurePlan(lost, PLAN, { history: "lost", ...T }));
    expect(arming.result).toEqual(STORED);
    // A grace of at most 60 s is made exact by a lease on its grace blob.
    expect(arming.sent).toEqual(["GET blob", "GET list", "HEAD blob", "PUT blob", "PUT blob", "PUT lease"]);
    const lostDuring = await acquire([0], "h", lost);
    expect(lostDuring.kind).toBe("grace");
    expect((lostDuring as { remainingMs: number }).remainingMs).toBeGreaterThan(lostGrace - 5000);
    expect((lostDuring as { remainingMs: number }).remainingMs).toBeLessThanOrEqual(lostGrace + 1000);
    // "unknown": the longest lease and one window, over 60 s, so it lives in the plan blob's metadata alone.
    const other = newResource();
    const unknownGrace = creationGraceMs(PLAN, "unknown");
    expect(unknownGrace).toBeGreaterThan(60_000);
    const unknown = await counted(() => backend.ensurePlan(other, PLAN, { history: "unknown", ...T }));
    expect(unknown.result).toEqual(STORED);
    expect(unknown.sent).toEqual(["GET blob", "GET list", "HEAD blob", "PUT blob"]);
    const during = await counted(() => acquire([0, 1, 2, 3], "h", other));
    expect(during.result.kind).toBe("grace");
    expect((during.result as { remainingMs: number }).remainingMs).toBeGreaterThan(unknownGrace - 5000);
    expect((during.result as { remainingMs: number }).remainingMs).toBeLessThanOrEqual(unknownGrace + 1000);
    expect(during.sent).toEqual(["GET list"]);
  });

  test("tryAcquire: 5 requests on a partition's first grant, 3 after, 1 when nothing is free or the epoch differs", async () => {
    const first = await counted(() => lease([0]));
    expect(first.result.partition).toBe(0);
    // list, create blob, acquire, confirm listing, record holder + fence + epoch
    expect(first.sent).toEqual(["GET list", "PUT blob", "PUT lease", "GET list", "PUT metadata"]);
    await backend.release(first.result, T);

    const warm = await counted(() => lease([0]));
    expect(warm.sent).toEqual(["GET list", "PUT lease", "PUT metadata"]);
    expect(warm.result.fencingToken).toBe(first.result.fencingToken! + 1);
    expect(warm.result.epoch).toBe(1);

    const none = await counted(() => acquire([0], "other"));
    expect(none.result).toEqual({ kind: "taken" });
    expect(none.sent).toEqual(["GET list"]);
    const changed = await counted(() => acquire([1], "other", resource, { plan: PLAN, epoch: 3 }));
    expect(changed.result).toEqual({ kind: "plan-changed", epoch: 1 });
    expect(changed.sent).toEqual(["GET list"]);
  });

  test.each([0, 1, 3])("heartbeat holding %i leases: k + 3 requests, first publication and after", async (k) => {
    const leases = await Promise.all(Array.from({ length: k }, (_, i) => lease([i])));
    const first = await counted(() => heartbeat("h", leases));
    expect(first.result.renewed).toEqual(leases.map(() => true));
    // listing; renewals, and the record blob created with the record, then leased
    expect(sorted(first.sent)).toEqual(sorted(["GET list", "PUT blob", "PUT lease", ...leases.map(() => "PUT lease")]));
    const steady = await counted(() => heartbeat("h", leases));
    expect(steady.result.renewed).toEqual(leases.map(() => true));
    // listing; renewals, the record's lease and the record, all at once
    expect(sorted(steady.sent)).toEqual(sorted(["GET list", "PUT metadata", "PUT lease", ...leases.map(() => "PUT lease")]));
    expect(steady.sent.length).toBe(k + 3);
    expect(steady.result.holders.map((h) => [h.holderId, h.held])).toEqual([["h", leases.map((l) => l.partition)]]);
    console.log(`heartbeat with ${k} leases: ${steady.sent.length} requests (${steady.sent.join(", ")})`);
  });

  test("heartbeat under another epoch, or for a resource without a plan: the listing only", async () => {
    const a = await lease([0]);
    const other = await counted(() => heartbeat("h", [a], resource, { plan: PLAN, epoch: 2 }));
    expect(other.result).toMatchObject({ renewed: [false], samePlan: false, epoch: 1 });
    expect(other.sent).toEqual(["GET list"]);
    // Equal epochs are not enough: another plan under the stored epoch renews nothing either.
    const differs = await counted(() => heartbeat("h", [a], resource, { plan: validatePlan({ ...PLAN, limit: 7 }), epoch: 1 }));
    expect(differs.result).toMatchObject({ renewed: [false], samePlan: false, epoch: 1 });
    expect(differs.sent).toEqual(["GET list"]);
    const none = await counted(() => heartbeat("h", [], `${resource}-none`));
    expect(none.result).toEqual({ renewed: [], samePlan: false, epoch: null, graceMs: 0, holders: [] });
    expect(none.sent).toEqual(["GET list"]);
  });

  test("release: 1; readPlan: 1; inspect: 2 at once", async () => {
    const a = await lease([1]);
    expect((await counted(() => backend.release(a, T))).sent).toEqual(["PUT lease"]);
    expect((await counted(() => backend.readPlan(resource, T))).sent).toEqual(["GET blob"]);
    expect(sorted((await counted(() => backend.inspect(resource, T))).sent)).toEqual(["GET blob", "GET list"]);
  });

  test("replacePlan and deletePlan: plan and listing at once, the plan write, grace blob and its lease = 5", async () => {
    const next = validatePlan({ ...PLAN, limit: 50 });
    const replaced = await counted(() => backend.replacePlan(resource, next, { expectedEpoch: 1, ...T }));
    expect(replaced.result).toEqual({ plan: next, epoch: 2 });
    expect(sorted(replaced.sent.slice(0, 2))).toEqual(["GET blob", "GET list"]);
    expect(replaced.sent.slice(2)).toEqual(["PUT blob", "PUT blob", "PUT lease"]);
    const deleted = await counted(() => backend.deletePlan(resource, T));
    expect(deleted.result).toBe(true);
    expect(sorted(deleted.sent.slice(0, 2))).toEqual(["GET blob", "GET list"]);
    expect(deleted.sent.slice(2)).toEqual(["PUT blob", "PUT blob", "PUT lease"]);
    expect((await counted(() => backend.deletePlan(resource, T))).sent.length).toBe(2);
  });
});

describe("AzureBlobLeaseBackend graces", () => {
  test("a grace longer than 60 s lives in the plan blob's metadata alone (no grace blob), measured from the server's clock", async () => {
    // A one-minute window needs a TTL above twice its safety margin: Azure's longest, 60 s.
    const slow = validatePlan({ ...PLAN, intervalMs: 60_000, leaseTtlMs: 60_000 });
    const grace = switchGraceMs(PLAN, slow);
    expect(grace).toBeGreaterThan(60_000);
    const started = Date.now();
    const replaced = await counted(() => backend.replacePlan(resource, slow, T));
    expect(replaced.sent.slice(2)).toEqual(["PUT blob"]);
    const during = await acquire([0], "h", resource, replaced.result);
    expect(during.kind).toBe("grace");
    const remaining = (during as { remainingMs: number }).remainingMs;
    expect(remaining).toBeLessThanOrEqual(grace + 1000);
    expect(remaining).toBeGreaterThanOrEqual(grace - (Date.now() - started) - 1100);
  });

  test("a plan whose epoch went back (the plan blob restored alone) grants nothing while a later-epoch lease lives", async () => {
    const a = await lease([0]);
    // As if the plan had moved on to epoch 7 and this lease were granted then, before the plan blob was restored.
    await rawContainer().getBlockBlobClient(`${resource}/p/0`).setMetadata({ holder: "h", fence: "1", epoch: "7", leasettlms: String(TTL) }, { conditions: { leaseId: a.token } });
    expect(await acquire([1])).toEqual({ kind: "grace", remainingMs: TTL });
    await backend.release(a, T);
    expect((await acquire([1])).kind).toBe("granted");
  });

  test("a new grace never shortens a running one: replacing during a 60 s creation grace keeps it", async () => {
    const other = newResource();
    await backend.ensurePlan(other, PLAN, { history: "unknown", ...T });
    const next = await backend.replacePlan(other, validatePlan({ ...PLAN, limit: 50 }), T);
    const during = await acquire([0], "h", other, next);
    expect(during.kind).toBe("grace");
    expect((during as { remainingMs: number }).remainingMs).toBeGreaterThan(switchGraceMs(PLAN, PLAN) + 20_000);
  });
});

describe("AzureBlobLeaseBackend holder records", () => {
  test("a holder id that is no safe blob name round-trips; held is stored as ranges", async () => {
    const leases = [await lease([0]), await lease([1]), await lease([3])];
    const odd = "host/1?#%~.";
    const beat = await backend.heartbeat({ resource, plan: STORED, holder: record(odd, [0, 1, 3]), leases }, T);
    expect(beat.holders.map((h) => h.holderId)).toEqual([odd]);
    const names: string[] = [];
    const metadata: Record<string, string>[] = [];
    for await (const item of rawContainer().listBlobsFlat({ prefix: `${resource}/h/`, includeMetadata: true })) {
      names.push(item.name);
      metadata.push(item.metadata ?? {});
    }
    expect(names).toEqual([`${resource}/h/~${Buffer.from(odd).toString("base64url")}`]);
    expect(metadata[0]?.held).toBe("0-1,3");
    const state = await backend.inspect(resource, T);
    expect(state.holders.map((h) => [h.holderId, h.held])).toEqual([[odd, [0, 1, 3]]]);
  });

  test("every process reads each live record whole; inspect too, when the plan blob's metadata does not describe the plan", async () => {
    const a = await lease([1]);
    const own = record("h", [1], { demand: 12.3456, rate: 7.0001, weight: 2.5 });
    const published = (await backend.heartbeat({ resource, plan: STORED, holder: own, leases: [a] }, T)).holders.find((h) => h.holderId === "h");
    const seen = await heartbeat("reader", []);
    const read = seen.holders.find((h) => h.holderId === "h");
    expect(read).toEqual(published);
    expect(read).toMatchObject({ held: [1], wants: 1, weight: 2.5, since: expect.any(Number) });
    expect(read?.expiresInMs).toBeGreaterThan(TTL - 3000);
    // A plan blob whose metadata was dropped (rewritten by another tool): requests go by its content.
    await rawContainer().getBlockBlobClient(`${resource}/plan`).setMetadata({});
    const after = await heartbeat("h", [a]);
    expect(after).toMatchObject({ renewed: [true], samePlan: true, epoch: 1 });
    const state = await backend.inspect(resource, T);
    expect(state.stored).toEqual(STORED);
    expect(state.holders.map((h) => [h.holderId, h.held]).sort()).toEqual([["h", [1]], ["reader", []]]);
  });

  test("a record too large for Azure's 8 KB of metadata is stored without held, which readers take from the leases", async () => {
    const big = validatePlan({ ...PLAN, partitions: 4000, limit: 4000 });
    const other = newResource();
    const bigStored = await backend.ensurePlan(other, big, { history: "fresh", ...T });
    const held = [await lease([0], "wide", other, bigStored), await lease([2], "wide", other, bigStored)];
    const claimed = Array.from({ length: 2000 }, (_, i) => i * 2);
    const beat = await backend.heartbeat({ resource: other, plan: bigStored, holder: record("wide", claimed), leases: held }, T);
    expect(beat.renewed).toEqual([true, true]);
    // The publisher's own view is what it sent; everyone else's comes from the leases.
    expect(beat.holders.find((h) => h.holderId === "wide")?.held).toHaveLength(2000);
    const seen = await backend.heartbeat({ resource: other, plan: bigStored, holder: record("reader"), leases: [] }, T);
    expect(seen.holders.find((h) => h.holderId === "wide")?.held).toEqual([0, 2]);
  });
});

describe("AzureBlobLeaseBackend after one lease TTL (one shared wait)", () => {
  const r = { expired: "", collect: "", republish: "", fresh: "", traced: "", unarmed: "", armed: "" };
  let expiredLease: Lease;
  let sinceBefore: number;
  let unarmedDuring: AcquireResult;
  let armedPlan: StoredPlan;

  beforeAll(async () => {
    for (const key of Object.keys(r) as (keyof typeof r)[]) r[key] = newResource();
    await Promise.all(
      [r.expired, r.collect, r.republish, r.traced, r.armed].map((res) => backend.ensurePlan(res, PLAN, { history: "fresh", ...T })),
    );
    // A plan whose grace blob was never leased (its writer stopped after the plan write).
    const text = encodeStoredPlan({ plan: PLAN, epoch: 1 });
    await rawContainer()
      .getBlockBlobClient(`${r.unarmed}/plan`)
      .upload(text, Buffer.byteLength(text), {
        metadata: { epoch: "1", partitions: "4", leasettlms: String(TTL), digest: storedPlanDigest(STORED), gracems: "1500", graceid: "never-armed" },
      });
    unarmedDuring = await acquire([0], "h", r.unarmed);
    // A switch grace of about 16 s, made exact by a 17 s lease on its grace blob.
    armedPlan = await backend.replacePlan(r.armed, validatePlan({ ...PLAN, limit: 50 }), T);
    expiredLease = await lease([0], "h", r.expired);
    for (const id of ["gone-1", "gone-2", "gone-3"]) await heartbeat(id, [], r.collect);
    await heartbeat("first", [], r.republish);
    sinceBefore = (await heartbeat("second", [], r.republish)).holders.find((h) => h.holderId === "second")!.since;
    // A resource whose plan blob vanished (deleted by hand) while its partition blobs remain.
    await lease([1], "h", r.traced);
    await rawContainer().getBlockBlobClient(`${r.traced}/plan`).delete();
    // TTL + 1 s for whole-second Last-Modified times + 1 s for the Date header, and the witness
    // must be older than TTL + 1 s.
    await sleep(Math.max(TTL + 2200, witnessCreatedAt + TTL + 2200 - Date.now()));
  }, 60_000);

  test("an expired lease nobody took is reported lost without a renewal request (Azure would renew it)", async () => {
    const { result, sent } = await counted(() => heartbeat("h", [expiredLease], r.expired));
    expect(result.renewed).toEqual([false]);
    expect(sent.filter((s) => s === "PUT lease")).toHaveLength(1); // the record's lease only
  });

  test("expired records are removed by later heartbeats, at most 2 per heartbeat", async () => {
    const first = await counted(() => heartbeat("collector", [], r.collect));
    expect(first.sent.filter((s) => s === "DELETE blob")).toHaveLength(2);
    expect(first.result.holders.map((h) => h.holderId)).toEqual(["collector"]);
    const second = await counted(() => heartbeat("collector", [], r.collect));
    expect(second.sent.filter((s) => s === "DELETE blob")).toHaveLength(1);
    const names: string[] = [];
    for await (const item of rawContainer().listBlobsFlat({ prefix: `${r.collect}/h/` })) names.push(item.name);
    expect(names).toEqual([`${r.collect}/h/collector`]);
  });

  test("a record published again after it expired gets a new, larger since; the record's lease is taken before it is written", async () => {
    const { result, sent } = await counted(() => heartbeat("second", [], r.republish));
    const mine = result.holders.find((h) => h.holderId === "second")!;
    expect(mine.since).toBeGreaterThan(sinceBefore);
    expect(sent.filter((s) => s !== "DELETE blob")).toEqual(["GET list", "PUT lease", "PUT metadata"]);
  });

  test("a grace whose grace blob was never leased ends by the plan blob's metadata: Last-Modified + 1 s + gracems", async () => {
    expect(unarmedDuring.kind).toBe("grace");
    expect((unarmedDuring as { remainingMs: number }).remainingMs).toBeLessThanOrEqual(2500);
    expect((await acquire([0], "h", r.unarmed)).kind).toBe("granted");
  });

  test("a switch grace ends within its length + 1 s; the next plan write removes its spent grace blob", async () => {
    expect((await acquire([0], "h", r.armed, armedPlan)).kind).toBe("granted");
    const deleted = await counted(() => backend.deletePlan(r.armed, T));
    expect(deleted.sent.filter((label) => label === "DELETE blob")).toHaveLength(1);
  });

  test("a new resource starts at once once the witness is older than the grace; a resource with blobs left does not", async () => {
    const fresh = await counted(() => backend.ensurePlan(r.fresh, PLAN, { history: "lost", ...T }));
    expect(fresh.sent).toEqual(["GET blob", "GET list", "HEAD blob", "PUT blob"]);
    expect((await acquire([0], "h", r.fresh)).kind).toBe("granted");
    await backend.ensurePlan(r.traced, PLAN, { history: "lost", ...T });
    const traced = await acquire([0], "h", r.traced);
    expect(traced.kind).toBe("grace");
    expect((traced as { remainingMs: number }).remainingMs).toBeGreaterThan(TTL - 3000);
  });
});

describe("AzureBlobLeaseBackend across a server restart", () => {
  /** Restarts the server empty and lets another client store the plan again, as after a loss. */
  const loseStateAndReplan = async (): Promise<void> => {
    beforeSend = undefined;
    await server.restart();
    const other = new AzureBlobLeaseBackend({ containerClient: rawContainer() });
    await other.ensurePlan(resource, PLAN, { history: "lost", ...T });
  };

  test("a restarted (empty) server: no plan anywhere; the plan stored again starts the TTL grace (the witness is new)", async () => {
    const a = await lease([0]);
    await heartbeat("h", [a]);
    await server.restart();
    await expect(acquire([1])).rejects.toBeInstanceOf(PlanMissingError);
    const beat = await counted(() => heartbeat("h", [a]));
    expect(beat.result).toEqual({ renewed: [false], samePlan: false, epoch: null, graceMs: 0, holders: [] });
    expect(beat.sent).toEqual(["GET list"]);
    await backend.release(a, T);
    expect(await backend.readPlan(resource, T)).toBeNull();
    expect(await backend.inspect(resource, T)).toEqual({ stored: null, graceMs: 0, partitions: [], holders: [] });
    // The container is gone too; ensurePlan creates it (and a new witness) again.
    expect(await backend.ensurePlan(resource, PLAN, { history: "lost", ...T })).toEqual({ plan: PLAN, epoch: 1 });
    const after = await acquire([0, 1]);
    expect(after.kind).toBe("grace");
    expect((after as { remainingMs: number }).remainingMs).toBeGreaterThan(TTL - 2000);
  });

  test("inside tryAcquire, a partition blob created after the loss is confirmed against the plan and given up (grace)", async () => {
    beforeSend = async (label, url) => {
      if (label === "PUT blob" && url.includes(`/${resource}/p/0`)) await loseStateAndReplan();
    };
    const { result, sent } = await counted(() => acquire([0]));
    expect(result.kind).toBe("grace");
    // list, create, acquire, confirming list (new plan, grace), release
    expect(sent).toEqual(["GET list", "PUT blob", "PUT lease", "GET list", "PUT lease"]);
    expect((await backend.inspect(resource, T)).partitions[0]).toMatchObject({ holderId: null });
  });

  test("inside tryAcquire, an existing partition blob lost between listing and lease: PlanMissingError", async () => {
    await backend.release(await lease([0]), T);
    beforeSend = async (label, url) => {
      if (label === "PUT lease" && url.includes(`/${resource}/p/0`)) await loseStateAndReplan();
    };
    await expect(acquire([0])).rejects.toBeInstanceOf(PlanMissingError);
  });

  test("inside heartbeat, a loss between listing and renewals: nothing renewed, no plan", async () => {
    const a = await lease([0]);
    await heartbeat("h", [a]);
    // Every write of the heartbeat (renewal, record lease, record) waits for the restart, so all
    // of them reach the new, empty server.
    let restarted: Promise<void> | undefined;
    beforeSend = async (label) => {
      if (!label.startsWith("PUT")) return;
      restarted ??= server.restart();
      await restarted;
    };
    const { result, sent } = await counted(() => heartbeat("h", [a]));
    expect(result).toEqual({ renewed: [false], samePlan: false, epoch: null, graceMs: 0, holders: [] });
    expect(sorted(sent)).toEqual(["GET list", "PUT lease", "PUT lease", "PUT metadata"]);
  });
});

describe("AzureBlobLeaseBackend against a dead server", () => {
  test("a SIGSTOPped server: every call fails with TimeoutError at about timeoutMs 500", async () => {
    const a = await lease([3]);
    server.pause();
    try {
      const short = { timeoutMs: 500 };
      const started = performance.now();
      const results = await Promise.all(
        [
          backend.tryAcquire({ resource, plan: STORED, candidates: [0], holderId: "h" }, short),
          backend.heartbeat({ resource, plan: STORED, holder: record("h", [3]), leases: [a] }, short),
          backend.release(a, short),
          backend.ensurePlan(resource, PLAN, short),
          backend.readPlan(resource, short),
          backend.replacePlan(resource, PLAN, short),
          backend.deletePlan(resource, short),
          backend.inspect(resource, short),
        ].map((p) => p.then(() => "resolved", (e: unknown) => e)),
      );
      const elapsed = performance.now() - started;
      for (const r of results) expect(r).toBeInstanceOf(TimeoutError);
      expect(elapsed).toBeGreaterThanOrEqual(490);
      expect(elapsed).toBeLessThan(2500);
      console.log(`stalled server: 8 calls with timeoutMs 500 failed after ${elapsed.toFixed(0)} ms`);
    } finally {
      server.resume();
    }
  });

  test("a killed server: calls fail with BackendError at once (maxTries 1), or by timeoutMs with the SDK's default retries", async () => {
    const a = await lease([3]);
    const defaultRetries = new AzureBlobLeaseBackend({
      containerClient: BlobServiceClient.fromConnectionString(server.connectionString).getContainerClient(containerName),
    });
    await server.kill();
    try {
      let started = performance.now();
      const fast = await backend.heartbeat({ resource, plan: STORED, holder: record("h", [3]), leases: [a] }, { timeoutMs: 500 }).catch((e: unknown) => e);
      const fastMs = performance.now() - started;
      expect(fast).toBeInstanceOf(BackendError);
      expect(fastMs).toBeLessThan(500);
      started = performance.now();
      const slow = await defaultRetries.release(a, { timeoutMs: 500 }).catch((e: unknown) => e);
      const slowMs = performance.now() - started;
      expect(slow).toBeInstanceOf(TimeoutError);
      expect(slowMs).toBeLessThan(2500);
      console.log(`killed server: maxTries 1 failed in ${fastMs.toFixed(0)} ms (BackendError); default retries hit timeoutMs 500 at ${slowMs.toFixed(0)} ms`);
    } finally {
      await server.restart();
    }
  });
});
