import { createRequire } from "node:module";
import { join } from "node:path";
import type { Redis as RedisClient, RedisOptions } from "ioredis";

// No jest imports here: fixtures of child processes load this module too.

/**
 * The ioredis package the Redis-based tests run with: `PRL_IOREDIS` names it, `ioredis` (the
 * devDependency, 6.x, RESP3 by default) unless set; `ioredis5` is the npm alias of the oldest
 * supported 5.x (RESP2). Child processes inherit the variable, so a whole run uses one version.
 */
export const IOREDIS_PACKAGE = process.env.PRL_IOREDIS ?? "ioredis";

const ALLOWED = ["ioredis", "ioredis5"];
if (!ALLOWED.includes(IOREDIS_PACKAGE)) {
  throw new Error(`PRL_IOREDIS must be one of ${ALLOWED.join(", ")}, got ${JSON.stringify(IOREDIS_PACKAGE)}`);
}

// Resolved from the repository root (tests and fixtures run there), in CommonJS (jest) and ESM (tsx) alike.
const load = createRequire(join(process.cwd(), "package.json"));
const loaded = load(IOREDIS_PACKAGE) as { Redis?: typeof RedisClient; default?: typeof RedisClient };

/** The chosen package's client class (ioredis before 5.2.5 has only a default export). */
export const Redis: typeof RedisClient = loaded.Redis ?? loaded.default!;
/** The chosen package's version, e.g. `"6.0.0"`. */
export const IOREDIS_VERSION: string = (load(`${IOREDIS_PACKAGE}/package.json`) as { version: string }).version;

/** A client of the chosen version for `url`. */
export function createRedis(url: string, options: RedisOptions = {}): RedisClient {
  return new Redis(url, options);
}

export type { RedisClient };
