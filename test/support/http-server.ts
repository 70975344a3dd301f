import { createServer, type IncomingMessage, type RequestListener, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/** A node:http server on 127.0.0.1 and a free port, started by {@link startHttpServer}. */
export interface TestHttpServer {
  readonly url: string;
  readonly port: number;
  /** Closes the server and every open connection. */
  close(): Promise<void>;
}

/** startHttpServer listens with `handler` on 127.0.0.1, on a port the kernel picks (free by construction). */
export async function startHttpServer(handler: RequestListener<typeof IncomingMessage, typeof ServerResponse>): Promise<TestHttpServer> {
  const server = createServer(handler);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}
