import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";

/** The full path of `name` on PATH (or in /usr/sbin, /usr/bin), or null. */
export function findBinary(name: string): string | null {
  for (const dir of [...(process.env.PATH ?? "").split(":"), "/usr/sbin", "/usr/bin", "/usr/local/bin"]) {
    if (dir && existsSync(`${dir}/${name}`)) return `${dir}/${name}`;
  }
  return null;
}

/**
 * Finds `binary`, or, running as root on Debian, installs Debian package `pkg` first. Throws a
 * clear message naming what to install when neither works (or which variable `envHint` to set
 * `envWhat`, default "to a running server"); never skips silently.
 */
export function ensureBinary(binary: string, pkg: string, envHint: string, envWhat = "to a running server"): string {
  const found = findBinary(binary);
  if (found) return found;
  const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
  if (isRoot && existsSync("/etc/debian_version")) {
    try {
      execFileSync("apt-get", ["update", "-qq"], { stdio: "ignore", timeout: 180_000 });
      execFileSync("apt-get", ["install", "-y", "-qq", "--no-install-recommends", pkg], {
        stdio: "ignore",
        timeout: 300_000,
        env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
      });
    } catch (error) {
      throw new Error(`Could not install Debian package ${pkg} for ${binary}: ${(error as Error).message}. Set ${envHint} ${envWhat} instead.`);
    }
    const installed = findBinary(binary);
    if (installed) return installed;
  }
  throw new Error(`${binary} was not found on PATH. Install it (Debian: apt-get install ${pkg}) or set ${envHint} ${envWhat}.`);
}

/**
 * Finds the first existing path of `candidates`, or, running as root on Debian, installs Debian
 * package `pkg` first (as {@link ensureBinary} does for binaries on PATH). Throws a clear message
 * naming what to install when neither works.
 */
export function ensureFile(candidates: readonly string[], pkg: string, envHint: string): string {
  const found = candidates.find((c) => existsSync(c));
  if (found) return found;
  const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
  if (isRoot && existsSync("/etc/debian_version")) {
    try {
      execFileSync("apt-get", ["update", "-qq"], { stdio: "ignore", timeout: 180_000 });
      execFileSync("apt-get", ["install", "-y", "-qq", "--no-install-recommends", pkg], {
        stdio: "ignore",
        timeout: 300_000,
        env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
      });
    } catch (error) {
      throw new Error(`Could not install Debian package ${pkg} (for ${candidates[0]}): ${(error as Error).message}. Set ${envHint} to a running server instead.`);
    }
    const installed = candidates.find((c) => existsSync(c));
    if (installed) return installed;
  }
  throw new Error(`${candidates.join(" or ")} was not found. Install it (Debian: apt-get install ${pkg}) or set ${envHint} to a running server.`);
}
