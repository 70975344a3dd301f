import { BackendUrlError, describeServers, parseBackendUrl, redact } from "../../src/cli/backend-url.js";

const parse = (...addresses: string[]) => parseBackendUrl(addresses);
const fails = (addresses: string[], message: RegExp) => {
  expect(() => parseBackendUrl(addresses)).toThrow(BackendUrlError);
  expect(() => parseBackendUrl(addresses)).toThrow(message);
};

describe("parseBackendUrl: every address form the README and --help show", () => {
  test("redis://host:port, with user, password, database and TLS; the port defaults to 6379", () => {
    expect(parse("redis://127.0.0.1:6379")).toEqual({ kind: "redis", server: { host: "127.0.0.1", port: 6379, tls: false } });
    expect(parse("redis://cache.internal")).toEqual({ kind: "redis", server: { host: "cache.internal", port: 6379, tls: false } });
    expect(parse("rediss://app:p%40ss@cache.internal:6380/2")).toEqual({
      kind: "redis",
      server: { host: "cache.internal", port: 6380, tls: true, username: "app", password: "p@ss", db: 2 },
    });
    expect(parse("redis://:secret@[::1]:6379")).toEqual({ kind: "redis", server: { host: "::1", port: 6379, tls: false, password: "secret" } });
  });

  test("redlock://h1:p1,h2:p2,h3:p3, and three repeated redis:// addresses", () => {
    const servers = [6379, 6380, 6381].map((port) => ({ host: "127.0.0.1", port, tls: false }));
    expect(parse("redlock://127.0.0.1:6379,127.0.0.1:6380,127.0.0.1:6381")).toEqual({ kind: "redlock", servers });
    expect(parse("redis://127.0.0.1:6379", "redis://127.0.0.1:6380", "redis://127.0.0.1:6381")).toEqual({ kind: "redlock", servers });
    expect(parse("redlocks://:pw@a:1,b:2,c:3/1")).toEqual({
      kind: "redlock",
      servers: [{ host: "a", port: 1 }, { host: "b", port: 2 }, { host: "c", port: 3 }].map((s) => ({ ...s, tls: true, password: "pw", db: 1 })),
    });
  });

  test("etcd://host:port and multi-host etcd://h1:p1,h2:p2; the port defaults to 2379", () => {
    expect(parse("etcd://127.0.0.1:2379")).toEqual({ kind: "etcd", hosts: [{ host: "127.0.0.1", port: 2379 }], tls: false });
    expect(parse("etcd://10.0.0.1:2379,10.0.0.2,10.0.0.3:32379")).toEqual({
      kind: "etcd",
      hosts: [{ host: "10.0.0.1", port: 2379 }, { host: "10.0.0.2", port: 2379 }, { host: "10.0.0.3", port: 32379 }],
      tls: false,
    });
    expect(parse("etcds://root:pw@e1:2379")).toEqual({ kind: "etcd", hosts: [{ host: "e1", port: 2379 }], tls: true, auth: { username: "root", password: "pw" } });
  });

  test("Azure: connection strings (with ;container=NAME, or UseDevelopmentStorage=true) and azure+http(s):// addresses", () => {
    const azurite = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;";
    expect(parse(`${azurite}container=leases`)).toEqual({ kind: "azure-blob", connectionString: azurite, container: "leases", endpoint: { host: "127.0.0.1", port: 10000 } });
    expect(parse("DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=a2V5;EndpointSuffix=core.windows.net")).toMatchObject({
      container: "rate-limits",
      endpoint: { host: "acme.blob.core.windows.net", port: 443 },
    });
    expect(parse("UseDevelopmentStorage=true")).toMatchObject({ kind: "azure-blob", endpoint: { host: "127.0.0.1", port: 10000 } });
    expect(parse("azure+https://acme.blob.core.windows.net/acme?key=a2V5")).toEqual({
      kind: "azure-blob",
      connectionString: "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=a2V5;BlobEndpoint=https://acme.blob.core.windows.net:443/acme;",
      container: "rate-limits",
      endpoint: { host: "acme.blob.core.windows.net", port: 443 },
    });
    expect(parse("azure+http://127.0.0.1:10000/devstoreaccount1?key=a2V5&container=c1")).toMatchObject({ container: "c1", endpoint: { host: "127.0.0.1", port: 10000 } });
  });

  test("describeServers names the backend and every host:port", () => {
    expect(describeServers(parse("redlock://a:1,b:2,c:3"))).toBe("redlock a:1, b:2, c:3");
    expect(describeServers(parse("etcd://[::1]:2379,h2"))).toBe("etcd [::1]:2379, h2:2379");
    expect(describeServers(parse("UseDevelopmentStorage=true"))).toBe("azure-blob 127.0.0.1:10000");
  });
});

describe("parseBackendUrl: what it rejects, and how it says so", () => {
  test("the README's placeholder ports and other bad ports name the entry and what a port is", () => {
    fails(["redlock://h1:p1,h2:p2,h3:p3"], /the port of "h1:p1" must be a number from 1 to 65535, got "p1"/);
    fails(["etcd://e1:70000"], /the port of "e1:70000" must be a number from 1 to 65535/);
  });

  test("Redlock needs three distinct servers; redis:// names one", () => {
    fails(["redlock://a:1,b:2"], /Redlock needs at least 3 independent Redis servers, got 2/);
    fails(["redlock://a:1,b:2,a:1"], /a:1 is named twice/);
    fails(["redis://a:1,b:2,c:3"], /names 3 servers; a redis:\/\/ address names one \(for Redlock write redlock:\/\//);
    fails(["redis://a:1", "etcd://b:2"], /several --backend addresses are only accepted as redis:\/\/ URLs/);
  });

  test("empty hosts, unknown schemes, missing Azure keys and non-numeric databases", () => {
    fails(["etcd://a:1,,b:2"], /empty host/);
    fails(["mongodb://localhost"], /unknown backend scheme mongodb:/);
    fails(["localhost:6379"], /cannot parse backend address/);
    fails(["azure+http://127.0.0.1:10000/devstoreaccount1"], /needs the account as its path and \?key=ACCOUNT_KEY/);
    fails(["redis://a:1/zero"], /the path must be a database number/);
    fails([], /no backend given/);
  });

  test("messages never show passwords or keys", () => {
    expect(() => parse("redis://u:hunter2@a:1,b:2")).toThrow(/u:\*\*\*@/);
    expect(() => parse("redis://u:hunter2@a:1,b:2")).not.toThrow(/hunter2/);
    expect(redact("azure+http://h/acct?key=SECRET&container=x")).toBe("azure+http://h/acct?key=***&container=x");
    expect(redact("AccountName=a;AccountKey=SECRET;")).toBe("AccountName=a;AccountKey=***;");
  });
});
