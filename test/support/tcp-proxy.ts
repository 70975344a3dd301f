import { createServer, connect, type Server, type Socket } from "node:net";

/**
 * TcpProxy forwards 127.0.0.1:port to a target, and can blackhole: stop forwarding in both
 * directions without closing anything, as a network partition looks to a client.
 */
export class TcpProxy {
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();
  private blackholed = false;
  private holding = false;
  private held: Array<() => void> = [];
  private delayMs = 0;
  private resetReplies = 0;
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

  /**
   * Stops forwarding bytes (connections stay open). `"drop"` (default) swallows them for good;
   * `"hold"` keeps them and delivers them in order on {@link heal}, as TCP retransmission does
   * after a real partition heals. Dropping bytes inside a live connection is something TCP never
   * does: a Redis client then pairs every later reply with an older command.
   */
  blackhole(mode: "drop" | "hold" = "drop"): void {
    this.blackholed = true;
    this.holding = mode === "hold";
  }

  /** Forwards again, first delivering what a `"hold"` blackhole kept. */
  heal(): void {
    this.blackholed = false;
    this.holding = false;
    const held = this.held;
    this.held = [];
    for (const flush of held) flush();
  }

  /** Delays every forwarded chunk by `ms` in each direction (0: none), keeping their order: a slow network. */
  setDelay(ms: number): void {
    this.delayMs = ms;
  }

  /**
   * The next `count` chunks from the target are swallowed and their connection reset: the server
   * executed the request, but its reply is lost (what a lost reply looks like over TCP).
   */
  resetOnNextReplies(count = 1): void {
    this.resetReplies += count;
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
    const pipe = (from: Socket, to: Socket, isReply: boolean) =>
      from.on("data", (chunk) => {
        if (this.blackholed) {
          if (this.holding) this.held.push(() => to.destroyed || to.write(chunk));
          return;
        }
        if (isReply && this.resetReplies > 0) {
          this.resetReplies--;
          close();
          return;
        }
        if (this.delayMs > 0) setTimeout(() => to.destroyed || to.write(chunk), this.delayMs);
        else to.write(chunk);
      });
    pipe(client, upstream, false);
    pipe(upstream, client, true);
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
