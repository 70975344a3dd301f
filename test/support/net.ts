import { closeSync, mkdirSync, openSync, readFileSync, statSync, writeSync } from "node:fs";
import { createServer, connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/**
 * The ports {@link freePort} hands out: above docker-compose.yml's published ports (up to 26392)
 * and below Linux's default ephemeral range (32768-60999). A port the kernel picks for `listen(0)`
 * comes from the ephemeral range, where any outgoing connection of any process (a worker's client
 * socket) can take it as its source port between our check and the server's bind; CI saw Sentinel
 * fail with "Address already in use" that way while two jest lanes ran side by side.
 */
const PORT_LOW = 27_000;
const PORT_HIGH = 32_767;
/** A reservation older than this is stale (its test run is over); the port may be handed out again. */
const RESERVATION_TTL_MS = 60 * 60_000;
const reservations = join(tmpdir(), "prl-test-ports");

function ephemeralLow(): number {
  try {
    const [low] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/).map(Number);
    return Number.isInteger(low) ? low! : 32_768;
  } catch {
    return 32_768;
  }
}

/** True when this process now owns `port`'s reservation file (exclusive across processes). */
function reserve(port: number): boolean {
  const file = join(reservations, String(port));
  try {
    const fd = openSync(file, "wx");
    writeSync(fd, String(process.pid));
    closeSync(fd);
    return true;
  } catch {
    try {
      if (Date.now() - statSync(file).mtimeMs < RESERVATION_TTL_MS) return false;
      const fd = openSync(file, "w"); // stale: take it over
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return true;
    } catch {
      return false;
    }
  }
}

function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.unref();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

function kernelPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/**
 * A free TCP port on 127.0.0.1 for a server a test starts: outside the ephemeral range, reserved
 * for an hour through a file under the temporary directory so that no other test process (the
 * other jest lane, another worker) is handed it meanwhile, and bindable when returned. Falls back
 * to a kernel-chosen port where the ephemeral range leaves no room below it.
 */
export async function freePort(): Promise<number> {
  const high = Math.min(PORT_HIGH, ephemeralLow() - 1);
  if (high - PORT_LOW < 1000) return kernelPort();
  mkdirSync(reservations, { recursive: true });
  for (let attempt = 0; attempt < 200; attempt += 1) {
    const port = PORT_LOW + Math.floor(Math.random() * (high - PORT_LOW + 1));
    if (reserve(port) && (await bindable(port))) return port;
  }
  return kernelPort();
}

/** Resolves once `host:port` accepts a TCP connection; rejects with a clear message after `timeoutMs`. */
export async function waitForPort(port: number, what: string, timeoutMs = 20_000, host = "127.0.0.1"): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = connect({ port, host });
      socket.once("connect", () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${what} did not accept connections on ${host}:${port} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
