import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { findBinary } from "../support/binaries.js";

/**
 * The tools the model check needs: the SPIN model checker and a C compiler for the verifier it
 * generates. Like the servers of the other suites, they are installed by the test set-up when
 * missing (Debian, as root); otherwise the test fails with a message naming what to install. It
 * never skips: a model check that silently does not run proves nothing.
 */
export interface ModelTools {
  /** Path of `spin`. */
  spin: string;
  /** Path of the C compiler (`cc`, else `gcc`). */
  cc: string;
  /** First line of `spin -V`, e.g. "Spin Version 6.5.2 -- 6 December 2019". */
  spinVersion: string;
  /** First line of `cc --version`. */
  ccVersion: string;
}

/** Finds `binary`, installing Debian package `pkg` first when running as root on Debian. */
function ensureTool(binary: string, pkg: string, alternatives: readonly string[] = []): string {
  const found = [binary, ...alternatives].map(findBinary).find((b) => b !== null);
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
      throw new Error(`Could not install Debian package ${pkg} for ${binary}: ${(error as Error).message}. The model check (test/model) needs it.`);
    }
    const installed = [binary, ...alternatives].map(findBinary).find((b) => b !== null);
    if (installed) return installed;
  }
  throw new Error(
    `${binary} was not found on PATH. The model check (test/model) needs it: install it (Debian: apt-get install ${pkg}; ` +
      `elsewhere see https://spinroot.com for spin and any C compiler for cc) and run the tests again.`,
  );
}

/** Finds or installs spin and a C compiler; throws a clear message when it cannot. */
export function ensureModelTools(): ModelTools {
  const spin = ensureTool("spin", "spin");
  const cc = ensureTool("cc", "gcc", ["gcc"]);
  const firstLine = (file: string, args: string[]) =>
    execFileSync(file, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).split("\n")[0]!.trim();
  return { spin, cc, spinVersion: firstLine(spin, ["-V"]), ccVersion: firstLine(cc, ["--version"]) };
}
