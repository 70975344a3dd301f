/** A server's host and port, as the CLI names it in messages (`host:port`). */
export interface ServerAddress {
  readonly host: string;
  readonly port: number;
}

/** One Redis server: where it is and how to log in. */
export interface RedisServerSpec extends ServerAddress {
  readonly tls: boolean;
  readonly username?: string;
  readonly password?: string;
  readonly db?: number;
}

/**
 * BackendSpec is a lease backend addressed by URL or connection string, parsed by
 * {@link parseBackendUrl}. Plain data, so it can be handed to a child process as JSON.
 */
export type BackendSpec =
  | { readonly kind: "redis"; readonly server: RedisServerSpec }
  | { readonly kind: "redlock"; readonly servers: readonly RedisServerSpec[] }
  | { readonly kind: "etcd"; readonly hosts: readonly ServerAddress[]; readonly tls: boolean; readonly auth?: { readonly username: string; readonly password: string } }
  | { readonly kind: "azure-blob"; readonly connectionString: string; readonly container: string; readonly endpoint: ServerAddress };

/** BackendUrlError is a backend address that cannot be understood (a usage error). */
export class BackendUrlError extends Error {
  /** Creates the error with a message naming the address and the accepted forms. */
  constructor(message: string) {
    super(message);
    this.name = "BackendUrlError";
  }
}

/** The container the CLI and the demo use for Azure blob leases unless the address names one. */
export const DEFAULT_AZURE_CONTAINER = "rate-limits";

/** The accepted backend address forms, for help texts. */
export const BACKEND_URL_FORMS = [
  "redis://[user:password@]host[:port][/db]     (rediss:// for TLS; port 6379 by default)",
  "redlock://[user:password@]host1:port1,host2:port2,host3:port3[/db]   (3+ independent Redis servers; redlocks:// for TLS)",
  "etcd://[user:password@]host[:port][,host:port...]   (etcds:// for TLS; port 2379 by default)",
  "azure+http://host:port/ACCOUNT?key=KEY[&container=NAME]   (azure+https://ACCOUNT.blob.core.windows.net/ACCOUNT?key=KEY for Azure; Azurite: 127.0.0.1:10000, account devstoreaccount1)",
  "an Azure Storage connection string   (DefaultEndpointsProtocol=...;AccountName=...;AccountKey=...[;container=NAME], or UseDevelopmentStorage=true)",
];

const FORMS = `expected one of:\n  ${BACKEND_URL_FORMS.join("\n  ")}`;

/**
 * parseBackendUrl turns the `--backend` addresses into a {@link BackendSpec}. One address is any
 * form of {@link BACKEND_URL_FORMS}; several `redis://` addresses (a repeated `--backend`) mean
 * Redlock over those servers. Throws BackendUrlError naming the address (secrets hidden) and
 * what is wrong with it.
 */
export function parseBackendUrl(addresses: readonly string[]): BackendSpec {
  const list = addresses.map((a) => a.trim()).filter(Boolean);
  const first = list[0];
  if (first === undefined) throw new BackendUrlError(`no backend given; use --backend with one of:\n  ${BACKEND_URL_FORMS.join("\n  ")}`);
  if (list.length > 1) {
    if (!list.every((a) => /^rediss?:\/\//i.test(a))) {
      throw new BackendUrlError(`several --backend addresses are only accepted as redis:// URLs for Redlock (or write redlock://host1:port1,host2:port2,host3:port3); got ${list.map(redact).join(", ")}`);
    }
    return redlock(list.map((a) => redisServer(a)), list.join(", "));
  }
  if (/^(DefaultEndpointsProtocol|AccountName|AccountKey|BlobEndpoint|UseDevelopmentStorage|SharedAccessSignature)=/i.test(first)) return azureConnectionString(first);
  const address = splitAddress(first);
  switch (address.scheme) {
    case "redis":
    case "rediss": {
      if (address.hosts.length !== 1) throw new BackendUrlError(`${redact(first)} names ${address.hosts.length} servers; a redis:// address names one (for Redlock write redlock://host1:port1,host2:port2,host3:port3)`);
      return { kind: "redis", server: redisServer(first) };
    }
    case "redlock":
    case "redlocks": {
      const scheme = address.scheme === "redlocks" ? "rediss" : "redis";
      const servers = address.hosts.map((h) => redisServerFrom({ ...address, scheme, hosts: [h] }, first));
      return redlock(servers, first);
    }
    case "etcd":
    case "etcds": {
      if (address.query !== "" || (address.path !== "" && address.path !== "/")) throw new BackendUrlError(`${redact(first)}: an etcd address has no path or query; expected etcd://host:port[,host:port...]`);
      const hosts = address.hosts.map((h) => hostPort(h, 2379, first));
      const auth = address.username === undefined ? {} : { auth: { username: address.username, password: address.password ?? "" } };
      return { kind: "etcd", hosts, tls: address.scheme === "etcds", ...auth };
    }
    case "azure+http":
    case "azure+https": {
      if (address.hosts.length !== 1) throw new BackendUrlError(`${redact(first)} names ${address.hosts.length} hosts; an Azure address names one`);
      const tls = address.scheme === "azure+https";
      const endpoint = hostPort(address.hosts[0]!, tls ? 443 : 80, first);
      const query = new URLSearchParams(address.query);
      const account = address.path.replace(/^\/+/, "").split("/")[0] ?? "";
      const key = query.get("key");
      if (!account || !key) throw new BackendUrlError(`Azure address ${redact(first)} needs the account as its path and ?key=ACCOUNT_KEY, e.g. azure+http://127.0.0.1:10000/devstoreaccount1?key=...`);
      const scheme = tls ? "https" : "http";
      const connectionString = `DefaultEndpointsProtocol=${scheme};AccountName=${account};AccountKey=${key};BlobEndpoint=${scheme}://${formatHost(endpoint)}/${account};`;
      return { kind: "azure-blob", connectionString, container: query.get("container") ?? DEFAULT_AZURE_CONTAINER, endpoint };
    }
    default:
      throw new BackendUrlError(`unknown backend scheme ${address.scheme}: in ${redact(first)}; ${FORMS}`);
  }
}

/** `host:port`, with brackets around an IPv6 host. */
export function formatHost(address: ServerAddress): string {
  return `${address.host.includes(":") ? `[${address.host}]` : address.host}:${address.port}`;
}

/** The backend and its servers for messages, e.g. `redis 127.0.0.1:6379` or `etcd 10.0.0.1:2379, 10.0.0.2:2379`. */
export function describeServers(spec: BackendSpec): string {
  switch (spec.kind) {
    case "redis":
      return `redis ${formatHost(spec.server)}`;
    case "redlock":
      return `redlock ${spec.servers.map(formatHost).join(", ")}`;
    case "etcd":
      return `etcd ${spec.hosts.map(formatHost).join(", ")}`;
    case "azure-blob":
      return `azure-blob ${formatHost(spec.endpoint)}`;
  }
}

/** The address with passwords and keys hidden, for messages. */
export function redact(address: string): string {
  return address
    .replace(/(AccountKey=)[^;]*/gi, "$1***")
    .replace(/(SharedAccessSignature=)[^;]*/gi, "$1***")
    .replace(/([?&]key=)[^&]*/gi, "$1***")
    .replace(/(\/\/[^:/@]*:)[^@/]*@/g, "$1***@");
}

interface SplitAddress {
  readonly scheme: string;
  readonly username?: string;
  readonly password?: string;
  /** The raw `host[:port]` entries of the authority, comma-separated in the address. */
  readonly hosts: readonly string[];
  /** From the first `/` after the authority up to `?` or `#`; "" when none. */
  readonly path: string;
  /** Without the `?`; "" when none. */
  readonly query: string;
}

/**
 * Splits `scheme://[user[:password]@]host[:port][,host[:port]...][/path][?query]` by hand:
 * `new URL` rejects a comma-separated host list, which Redlock and etcd addresses need.
 */
function splitAddress(text: string): SplitAddress {
  const match = /^([a-z][a-z0-9+.-]*):\/\/([^/?#]*)([^?#]*)(?:\?([^#]*))?(?:#.*)?$/i.exec(text);
  if (match === null) throw new BackendUrlError(`cannot parse backend address ${JSON.stringify(redact(text))}; ${FORMS}`);
  const [, scheme, authority, path, query] = match as unknown as [string, string, string, string, string | undefined];
  const at = authority.lastIndexOf("@");
  const userinfo = at === -1 ? null : authority.slice(0, at);
  const hostList = at === -1 ? authority : authority.slice(at + 1);
  const hosts = hostList.split(",").map((h) => h.trim());
  if (hosts.some((h) => h === "")) throw new BackendUrlError(`${redact(text)} has an empty host in ${JSON.stringify(hostList)}; write host:port entries separated by commas`);
  const decode = (part: string) => {
    try {
      return decodeURIComponent(part);
    } catch {
      throw new BackendUrlError(`${redact(text)}: cannot decode the user or password (percent-encode special characters)`);
    }
  };
  const colon = userinfo === null ? -1 : userinfo.indexOf(":");
  const username = userinfo === null ? undefined : decode(colon === -1 ? userinfo : userinfo.slice(0, colon));
  const password = userinfo === null || colon === -1 ? undefined : decode(userinfo.slice(colon + 1));
  return {
    scheme: scheme.toLowerCase(),
    ...(username === undefined ? {} : { username }),
    ...(password === undefined ? {} : { password }),
    hosts,
    path,
    query: query ?? "",
  };
}

/** One `host[:port]` entry (IPv6 in brackets), with `fallbackPort` when it names none. */
function hostPort(entry: string, fallbackPort: number, address: string): ServerAddress {
  const match = /^(\[[0-9a-fA-F:.]+\]|[^:[\]]+)(?::([^:]*))?$/.exec(entry);
  if (match === null) throw new BackendUrlError(`${redact(address)}: cannot read host and port from ${JSON.stringify(entry)}; write host:port`);
  const host = match[1]!.replace(/^\[|\]$/g, "");
  const portText = match[2];
  if (portText === undefined) return { host, port: fallbackPort };
  const port = /^\d+$/.test(portText) ? Number(portText) : NaN;
  if (!(port >= 1 && port <= 65535)) throw new BackendUrlError(`${redact(address)}: the port of ${JSON.stringify(entry)} must be a number from 1 to 65535, got ${JSON.stringify(portText)}`);
  return { host, port };
}

function redisServer(text: string): RedisServerSpec {
  return redisServerFrom(splitAddress(text), text);
}

function redisServerFrom(address: SplitAddress, text: string): RedisServerSpec {
  if (address.scheme !== "redis" && address.scheme !== "rediss") throw new BackendUrlError(`${redact(text)} is not a redis:// address`);
  if (address.hosts.length !== 1) throw new BackendUrlError(`${redact(text)} names ${address.hosts.length} servers; a redis:// address names one`);
  const server = hostPort(address.hosts[0]!, 6379, text);
  const dbText = address.path.replace(/^\/+/, "").replace(/\/+$/, "");
  if (dbText !== "" && !/^\d+$/.test(dbText)) throw new BackendUrlError(`${redact(text)}: the path must be a database number (e.g. /0), got ${JSON.stringify(address.path)}`);
  return {
    ...server,
    tls: address.scheme === "rediss",
    ...(address.username === undefined || address.username === "" ? {} : { username: address.username }),
    ...(address.password === undefined ? {} : { password: address.password }),
    ...(dbText === "" ? {} : { db: Number(dbText) }),
  };
}

function redlock(servers: RedisServerSpec[], text: string): BackendSpec {
  if (servers.length < 3) throw new BackendUrlError(`Redlock needs at least 3 independent Redis servers, got ${servers.length}: ${redact(text)}`);
  const seen = new Set<string>();
  for (const server of servers) {
    const key = formatHost(server);
    if (seen.has(key)) throw new BackendUrlError(`Redlock needs independent servers, but ${key} is named twice in ${redact(text)}`);
    seen.add(key);
  }
  return { kind: "redlock", servers };
}

function azureConnectionString(text: string): BackendSpec {
  // `container=` is ours, not Azure's: strip it before handing the string to the SDK.
  const parts = text.split(";").map((p) => p.trim()).filter(Boolean);
  const containerPart = parts.find((p) => /^container=/i.test(p));
  const rest = parts.filter((p) => p !== containerPart);
  const field = (name: string) => rest.find((p) => p.toLowerCase().startsWith(`${name.toLowerCase()}=`))?.slice(name.length + 1);
  let endpoint: ServerAddress;
  if (/^true$/i.test(field("UseDevelopmentStorage") ?? "")) endpoint = { host: "127.0.0.1", port: 10000 };
  else {
    const blob = field("BlobEndpoint");
    const account = field("AccountName");
    if (blob !== undefined) {
      let url: URL;
      try {
        url = new URL(blob);
      } catch {
        throw new BackendUrlError(`the connection string's BlobEndpoint ${JSON.stringify(blob)} is not a URL`);
      }
      endpoint = { host: url.hostname.replace(/^\[|\]$/g, ""), port: Number(url.port || (url.protocol === "https:" ? 443 : 80)) };
    } else if (account !== undefined) {
      endpoint = { host: `${account}.blob.${field("EndpointSuffix") ?? "core.windows.net"}`, port: /^http$/i.test(field("DefaultEndpointsProtocol") ?? "") ? 80 : 443 };
    } else {
      throw new BackendUrlError(`the Azure connection string ${redact(text)} names neither AccountName nor BlobEndpoint`);
    }
  }
  return { kind: "azure-blob", connectionString: `${rest.join(";")};`, container: containerPart ? containerPart.slice("container=".length) : DEFAULT_AZURE_CONTAINER, endpoint };
}
