import { createServer, connect, type Server, type Socket } from "node:net";

/**
 * TcpProxy forwards 127.0.0.1:port to a target, and can blackhole: stop forwarding in both
 * directions without closing anything, as a network partition looks to a client.
 */
export class TcpProxy {
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();
  private blackholed = false;
  /** The port the proxy listens on (after {@link start}). */
  port = 0;

  constructor(private readonly targetPort: number, private readonly targetHost = "127.0.0.1") {}

  /** Starts listening on a free port. */
  async start(): Promise<number> {
    this.server = createServer((client) => this.accept(client));
    await new Promise<void>((resolve) => this.server!.listen(0, "127.0.0.1", resolve));
    const address = this.server.address();
    this.port = typeof address === "object" && address ? address.port : 0;
    return this.port;
  }

  /** Stops forwarding bytes (connections stay open, data is swallowed). */
  blackhole(): void {
    this.blackholed = true;
  }

  /** Forwards again. Bytes swallowed meanwhile are lost, as on a real network. */
  heal(): void {
    this.blackholed = false;
  }

  /** Closes every connection and the listener. */
  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    this.server = null;
  }

  private accept(client: Socket): void {
    const upstream = connect({ port: this.targetPort, host: this.targetHost });
    this.sockets.add(client);
    this.sockets.add(upstream);
    const pipe = (from: Socket, to: Socket) =>
      from.on("data", (chunk) => {
        if (!this.blackholed) to.write(chunk);
      });
    pipe(client, upstream);
    pipe(upstream, client);
    const close = () => {
      client.destroy();
      upstream.destroy();
      this.sockets.delete(client);
      this.sockets.delete(upstream);
    };
    client.on("close", close).on("error", close);
    upstream.on("close", close).on("error", close);
  }
}
