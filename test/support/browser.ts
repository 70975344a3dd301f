import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type BrowserContext } from "playwright-core";
import { ensureBinary } from "./binaries.js";

// No jest imports here.

/**
 * The flags Chromium runs with: headless, no sandbox (tests may run as root, where the sandbox
 * refuses to start), and nothing that phones home or updates itself, since the machine may reach
 * no more than the npm registry and Debian's packages.
 */
export const CHROMIUM_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
] as const;

/** A running headless Chromium, from {@link launchChromium}. */
export interface Chromium {
  readonly context: BrowserContext;
  /** Closes the browser and deletes its profile. */
  close(): Promise<void>;
}

/** Options of {@link launchChromium}. */
export interface LaunchChromiumOptions {
  /** Page size in CSS pixels. Default 1200 × 900. */
  readonly viewport?: { readonly width: number; readonly height: number };
}

/**
 * launchChromium starts the Debian package `chromium` (`CHROMIUM_PATH` when set, else
 * /usr/bin/chromium, installed with apt-get first when missing and running as root) through
 * playwright-core, which never downloads a browser, with a fresh profile directory.
 */
export async function launchChromium(options: LaunchChromiumOptions = {}): Promise<Chromium> {
  const executablePath = process.env.CHROMIUM_PATH ?? ensureBinary("chromium", "chromium", "CHROMIUM_PATH", "to a Chromium executable");
  const profile = mkdtempSync(join(tmpdir(), "prl-chromium-"));
  try {
    const context = await chromium.launchPersistentContext(profile, {
      executablePath,
      headless: true,
      args: [...CHROMIUM_FLAGS],
      viewport: { width: options.viewport?.width ?? 1200, height: options.viewport?.height ?? 900 },
      deviceScaleFactor: 1,
      timeout: 30_000,
    });
    return {
      context,
      close: async () => {
        await context.close().catch(() => undefined);
        rmSync(profile, { recursive: true, force: true });
      },
    };
  } catch (error) {
    rmSync(profile, { recursive: true, force: true });
    throw error;
  }
}
