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
import type { Plan } from "../../src/contract/plan.js";
import { startAzurite, type AzuriteServer } from "../support/servers/azurite.js";

const PLAN: Plan = { limit: 100, intervalMs: 1000, partitions: 4, pools: {} };
const TTL = 15_000;
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

let backend: AzureBlobLeaseBackend;
let resource: string;

/** Runs `fn` and returns the requests it sent. */
async function counted<T>(fn: () => Promise<T>): Promise<{ result: T; sent: string[] }> {
  requests.length = 0;
  const result = await fn();
  return { result, sent: [...requests] };
}

beforeAll(async () => {
  server = await startAzurite();
  backend = new AzureBlobLeaseBackend({ containerClient: countedContainer() });
});
afterAll(async () => {
  await server?.stop();
});
beforeEach(async () => {
  resource = `unit-${randomUUID().slice(0, 8)}`;
  await backend.ensurePlan(resource, PLAN, { graceMs: 0, ...T });
});

describe("AzureBlobLeaseBackend lease durations", () => {
  test("validateTtl accepts whole seconds from 15 to 60 s and names leaseTtlMs and the range otherwise", () => {
    expect(AzureBlobLeaseBackend.validateTtl(15_000)).toBe(15);
    expect(AzureBlobLeaseBackend.validateTtl(60_000)).toBe(60);
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

  test("tryAcquire with an invalid TTL rejects with ConfigError before any request", async () => {
    const { result, sent } = await counted(() =>
      backend.tryAcquire(resource, [0], "h", 1000, T).then(() => "resolved", (e: unknown) => e),
    );
    expect(result).toBeInstanceOf(ConfigError);
    expect(sent).toEqual([]);
  });

  test("renew refuses a TTL longer than the one acquired (Azure renews to the original) and accepts a shorter one", async () => {
    const lease = await backend.tryAcquire(resource, [0], "h", 30_000, T);
    await expect(backend.renew(lease!, 45_000, T)).rejects.toBeInstanceOf(ConfigError);
    expect(await backend.renew(lease!, 15_000, T)).toBe(true);
    expect(await backend.renew(lease!, 30_000, T)).toBe(true);
  });
});

describe("AzureBlobLeaseBackend round trips", () => {
  test("tryAcquire: 5 requests on a partition's first grant, 3 after, 1 when nothing is free", async () => {
    const first = await counted(() => backend.tryAcquire(resource, [0], "h", TTL, T));
    expect(first.result?.partition).toBe(0);
    // list, create blob, acquire, confirm listing, record holder + fence
    expect(first.sent).toEqual(["GET list", "PUT blob", "PUT lease", "GET list", "PUT metadata"]);
    await backend.release(first.result!, T);

    const warm = await counted(() => backend.tryAcquire(resource, [0], "h", TTL, T));
    expect(warm.sent).toEqual(["GET list", "PUT lease", "PUT metadata"]);
    expect(warm.result?.fencingToken).toBe(first.result!.fencingToken! + 1);

    const none = await counted(() => backend.tryAcquire(resource, [0], "other", TTL, T));
    expect(none.result).toBeNull();
    expect(none.sent).toEqual(["GET list"]);
  });

  test("renew and release: 1 request each; ensurePlan: 1 when the plan exists; inspect: 2", async () => {
    const lease = await backend.tryAcquire(resource, [1], "h", TTL, T);
    expect((await counted(() => backend.renew(lease!, TTL, T))).sent).toEqual(["PUT lease"]);
    expect((await counted(() => backend.release(lease!, T))).sent).toEqual(["PUT lease"]);
    expect((await counted(() => backend.ensurePlan(resource, PLAN, { graceMs: 0, ...T }))).sent).toEqual(["GET blob"]);
    expect((await counted(() => backend.inspect(resource, T))).sent.sort()).toEqual(["GET blob", "GET list"]);
  });

  test("ensurePlan of a new plan with grace: read, grace blob, its lease, plan = 4; grants nothing meanwhile", async () => {
    const fresh = `${resource}-g`;
    const created = await counted(() => backend.ensurePlan(fresh, PLAN, { graceMs: 15_000, ...T }));
    expect(created.sent).toEqual(["GET blob", "PUT blob", "PUT lease", "PUT blob"]);
    const during = await counted(() => backend.tryAcquire(fresh, [0, 1, 2, 3], "h", TTL, T));
    expect(during.result).toBeNull();
    expect(during.sent).toEqual(["GET list"]);
  });
});

describe("AzureBlobLeaseBackend state on the server", () => {
  test("inspect shows holder, fencing token and an estimate of the time left", async () => {
    const lease = await backend.tryAcquire(resource, [2], "holder/ä", TTL, T);
    const states = await backend.inspect(resource, T);
    expect(states[2]).toMatchObject({ holderId: "holder/ä", fencingToken: lease!.fencingToken });
    expect(states[2]!.expiresInMs).toBeGreaterThan(TTL - 3000);
    expect(states[2]!.expiresInMs).toBeLessThanOrEqual(TTL);
  });

  test("a grace period longer than 60 s is kept by the grace blob's metadata after its lease", async () => {
    // An unleased grace blob recording a 120 s grace, as after the first 60 s of such a grace.
    await backend.ensurePlan(resource, PLAN, { graceMs: 0, ...T });
    const raw = countedContainer().getBlockBlobClient(`${resource}/grace`);
    await raw.upload("", 0, { metadata: { gracems: "120000" } });
    expect(await backend.tryAcquire(resource, [0], "h", TTL, T)).toBeNull();
    await raw.upload("", 0, { metadata: { gracems: "60000" } });
    expect(await backend.tryAcquire(resource, [0], "h", TTL, T)).not.toBeNull();
  });

  test("a restarted (empty) server: tryAcquire rejects with PlanMissingError, renew reports lost, a new plan starts a grace", async () => {
    const lease = await backend.tryAcquire(resource, [0], "h", TTL, T);
    await server.restart();
    await expect(backend.tryAcquire(resource, [1], "h", TTL, T)).rejects.toBeInstanceOf(PlanMissingError);
    expect(await backend.renew(lease!, TTL, T)).toBe(false);
    await backend.release(lease!, T);
    expect(await backend.readPlan(resource, T)).toBeNull();
    expect(await backend.inspect(resource, T)).toEqual([]);
    // The container is gone too; ensurePlan creates it again.
    await backend.ensurePlan(resource, PLAN, { graceMs: 15_000, ...T });
    expect(await backend.tryAcquire(resource, [0, 1], "h", TTL, T)).toBeNull();
  });
});

describe("AzureBlobLeaseBackend across a server restart inside one tryAcquire", () => {
  afterEach(() => {
    beforeSend = undefined;
  });

  /** Restarts the server empty and lets another client store the plan again, starting a grace period. */
  const loseStateAndReplan = async (): Promise<void> => {
    beforeSend = undefined;
    await server.restart();
    const service = BlobServiceClient.fromConnectionString(server.connectionString, { retryOptions: { maxTries: 1 } });
    const other = new AzureBlobLeaseBackend({ containerClient: service.getContainerClient(containerName) });
    await other.ensurePlan(resource, PLAN, { graceMs: 15_000, ...T });
  };

  test("a partition blob created after the state was lost is confirmed against the plan and given up (grace)", async () => {
    beforeSend = async (label, url) => {
      if (label === "PUT blob" && url.includes(`/${resource}/p/0`)) await loseStateAndReplan();
    };
    const { result, sent } = await counted(() => backend.tryAcquire(resource, [0], "h", TTL, T));
    expect(result).toBeNull();
    // list, create, acquire, confirming list (new plan, grace), release
    expect(sent).toEqual(["GET list", "PUT blob", "PUT lease", "GET list", "PUT lease"]);
    expect((await backend.inspect(resource, T))[0]).toMatchObject({ holderId: null });
  });

  test("an existing partition blob lost between listing and lease: PlanMissingError", async () => {
    const lease = await backend.tryAcquire(resource, [0], "h", TTL, T);
    await backend.release(lease!, T);
    beforeSend = async (label, url) => {
      if (label === "PUT lease" && url.includes(`/${resource}/p/0`)) await loseStateAndReplan();
    };
    await expect(backend.tryAcquire(resource, [0], "h", TTL, T)).rejects.toBeInstanceOf(PlanMissingError);
  });
});

describe("AzureBlobLeaseBackend against a dead server", () => {
  test("a SIGSTOPped server: every call fails with TimeoutError at about timeoutMs 500", async () => {
    const lease = await backend.tryAcquire(resource, [3], "h", TTL, T);
    server.pause();
    try {
      const started = performance.now();
      const results = await Promise.all([
        backend.tryAcquire(resource, [0], "h", TTL, { timeoutMs: 500 }).catch((e: unknown) => e),
        backend.renew(lease!, TTL, { timeoutMs: 500 }).catch((e: unknown) => e),
        backend.release(lease!, { timeoutMs: 500 }).catch((e: unknown) => e),
      ]);
      const elapsed = performance.now() - started;
      for (const r of results) expect(r).toBeInstanceOf(TimeoutError);
      expect(elapsed).toBeGreaterThanOrEqual(490);
      expect(elapsed).toBeLessThan(2500);
      console.log(`stalled server: 3 calls with timeoutMs 500 failed after ${elapsed.toFixed(0)} ms`);
    } finally {
      server.resume();
    }
  });

  test("a killed server: calls fail with BackendError at once (maxTries 1), or by timeoutMs with the SDK's default retries", async () => {
    const lease = await backend.tryAcquire(resource, [3], "h", TTL, T);
    const defaultRetries = new AzureBlobLeaseBackend({
      containerClient: BlobServiceClient.fromConnectionString(server.connectionString).getContainerClient(containerName),
    });
    await server.kill();
    try {
      let started = performance.now();
      const fast = await backend.renew(lease!, TTL, { timeoutMs: 500 }).catch((e: unknown) => e);
      const fastMs = performance.now() - started;
      expect(fast).toBeInstanceOf(BackendError);
      expect(fastMs).toBeLessThan(500);
      started = performance.now();
      const slow = await defaultRetries.renew(lease!, TTL, { timeoutMs: 500 }).catch((e: unknown) => e);
      const slowMs = performance.now() - started;
      expect(slow).toBeInstanceOf(TimeoutError);
      expect(slowMs).toBeLessThan(2500);
      console.log(`killed server: maxTries 1 failed in ${fastMs.toFixed(0)} ms (BackendError); default retries hit timeoutMs 500 at ${slowMs.toFixed(0)} ms`);
    } finally {
      await server.restart();
    }
  });
});
