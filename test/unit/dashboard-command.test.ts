import { runCli } from "../../src/cli/main.js";
import { freePort } from "../support/net.js";

async function run(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = "";
  let stderr = "";
  const sink = (append: (text: string) => void) => ({ write: (chunk: string) => (append(chunk), true) }) as unknown as NodeJS.WritableStream;
  const code = await runCli(args, sink((t) => (stdout += t)), sink((t) => (stderr += t)));
  return { code, stdout, stderr };
}

describe("dashboard command: arguments", () => {
  test("--help names the options and their defaults", async () => {
    const help = await run("dashboard", "--help");
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^partitioned-rate-limiter dashboard <resource> --backend <address> \[--port <n>\] \[--host <address>\] \[--interval-ms <ms>\]/);
    expect(help.stdout).toMatch(/--port <n>\s+port of the page \(default 7070; 0: any free port\)/);
    expect(help.stdout).toMatch(/--host <address>\s+address to listen on \(default 127\.0\.0\.1: this machine only\)/);
    expect(help.stdout).toMatch(/--interval-ms <ms>\s+least time between two readings of the backend, however many pages are open \(default 500\)/);
  });

  test.each([
    [["dashboard"], "dashboard needs a <resource>"],
    [["dashboard", "r", "s", "--backend", "redis://127.0.0.1:1"], 'unexpected argument "s" after the resource'],
    [["dashboard", "r", "--backend", "redis://127.0.0.1:1", "--port", "70000"], '--port must be a whole number from 0 to 65535, got "70000"'],
    [["dashboard", "r", "--backend", "redis://127.0.0.1:1", "--interval-ms", "50"], '--interval-ms must be a whole number of milliseconds from 100 to 600000, got "50"'],
    [["dashboard", "r", "--backend", "redis://127.0.0.1:1", "--port", "1", "--port", "2"], "--port was given 2 times; give it once"],
  ])("%j is a usage error", async (args, message) => {
    const result = await run(...args);
    expect(result).toEqual({ code: 2, stdout: "", stderr: `error: ${message}\nRun with --help for usage.\n` });
  });

  test("an unreachable backend fails at once with exit 4, naming the server", async () => {
    const port = await freePort();
    const result = await run("dashboard", "r", "--backend", `redis://:secret@127.0.0.1:${port}`, "--port", "0");
    expect(result).toEqual({ code: 4, stdout: "", stderr: `backend unreachable or failing: redis 127.0.0.1:${port}: connect ECONNREFUSED\n` });
  });
});
