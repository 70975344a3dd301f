/** BackendSpec is a lease backend addressed by URL or connection string, parsed by {@link parseBackendUrl}. */
export type BackendSpec =
  | { readonly kind: "redis"; readonly url: string }
  | { readonly kind: "redlock"; readonly urls: readonly string[] }
  | { readonly kind: "etcd"; readonly hosts: readonly string[] }
  | { readonly kind: "azure-blob"; readonly connectionString: string; readonly container: string };

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
  "redis://[user:password@]host:port[/db]      (rediss:// for TLS)",
  "redlock://host1:port1,host2:port2,host3:port3  (3+ independent Redis servers)",
  "etcd://host:port[,host:port...]             (etcds:// for TLS)",
  "azure+http://host:port/account?key=KEY[&container=NAME]   (azure+https:// for Azure; Azurite: host 127.0.0.1, account devstoreaccount1)",
  "an Azure Storage connection string          (DefaultEndpointsProtocol=...;AccountName=...;AccountKey=...;[container=NAME])",
];

/**
 * parseBackendUrl turns one or more addresses into a {@link BackendSpec}. Several `redis://`
 * addresses (a repeated `--backend`) mean Redlock over those servers. Throws BackendUrlError for
 * anything else, naming the accepted forms.
 */
export function parseBackendUrl(addresses: readonly string[]): BackendSpec {
  const list = addresses.map((a) => a.trim()).filter(Boolean);
  const first = list[0];
  if (first === undefined) throw new BackendUrlError(`no backend given; use --backend with one of:\n  ${BACKEND_URL_FORMS.join("\n  ")}`);
  if (list.length > 1) {
    if (!list.every((a) => /^rediss?:\/\//i.test(a))) {
      throw new BackendUrlError(`several --backend addresses are only accepted as redis:// URLs for Redlock; got ${list.join(", ")}`);
    }
    return redlock(list);
  }
  if (/^DefaultEndpointsProtocol=|AccountName=|BlobEndpoint=|UseDevelopmentStorage=/i.test(first)) return azureConnectionString(first);
  let url: URL;
  try {
    url = new URL(first);
  } catch {
    throw new BackendUrlError(`cannot parse backend address ${JSON.stringify(first)}; expected one of:\n  ${BACKEND_URL_FORMS.join("\n  ")}`);
  }
  switch (url.protocol) {
    case "redis:":
    case "rediss:":
      return { kind: "redis", url: first };
    case "redlock:":
    case "redlocks:": {
      const scheme = url.protocol === "redlocks:" ? "rediss" : "redis";
      const hosts = first.slice(url.protocol.length + 2).split(/[/?#]/)[0]!.split(",").filter(Boolean);
      return redlock(hosts.map((h) => `${scheme}://${h}`));
    }
    case "etcd:":
    case "etcds:": {
      const scheme = url.protocol === "etcds:" ? "https" : "http";
      const hosts = first.slice(url.protocol.length + 2).split(/[/?#]/)[0]!.split(",").filter(Boolean);
      if (hosts.length === 0) throw new BackendUrlError(`etcd address ${first} names no host`);
      return { kind: "etcd", hosts: hosts.map((h) => `${scheme}://${h}`) };
    }
    case "azure+http:":
    case "azure+https:": {
      const scheme = url.protocol === "azure+https:" ? "https" : "http";
      const account = url.pathname.replace(/^\/+/, "").split("/")[0] ?? "";
      const key = url.searchParams.get("key");
      if (!account || !key) throw new BackendUrlError(`Azure address ${redact(first)} needs an account in the path and ?key=ACCOUNT_KEY`);
      const connectionString = `DefaultEndpointsProtocol=${scheme};AccountName=${account};AccountKey=${key};BlobEndpoint=${scheme}://${url.host}/${account};`;
      return { kind: "azure-blob", connectionString, container: url.searchParams.get("container") ?? DEFAULT_AZURE_CONTAINER };
    }
    default:
      throw new BackendUrlError(`unknown backend scheme ${url.protocol} in ${redact(first)}; expected one of:\n  ${BACKEND_URL_FORMS.join("\n  ")}`);
  }
}

/** The address with passwords and keys hidden, for messages. */
export function redact(address: string): string {
  return address
    .replace(/(AccountKey=)[^;]*/gi, "$1***")
    .replace(/([?&]key=)[^&]*/gi, "$1***")
    .replace(/(\/\/[^:/@]*:)[^@/]*@/g, "$1***@");
}

function redlock(urls: string[]): BackendSpec {
  if (urls.length < 3) throw new BackendUrlError(`Redlock needs at least 3 independent Redis servers, got ${urls.length}: ${urls.map(redact).join(", ")}`);
  for (const u of urls) {
    try {
      new URL(u);
    } catch {
      throw new BackendUrlError(`cannot parse Redis address ${JSON.stringify(redact(u))} of the Redlock set`);
    }
  }
  return { kind: "redlock", urls };
}

function azureConnectionString(text: string): BackendSpec {
  // `container=` is ours, not Azure's: strip it before handing the string to the SDK.
  const parts = text.split(";").filter(Boolean);
  const containerPart = parts.find((p) => /^container=/i.test(p));
  const rest = parts.filter((p) => p !== containerPart).join(";") + ";";
  return { kind: "azure-blob", connectionString: rest, container: containerPart ? containerPart.slice("container=".length) : DEFAULT_AZURE_CONTAINER };
}
