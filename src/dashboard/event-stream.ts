import type { IncomingMessage, ServerResponse } from "node:http";

/**
 * EventStream is a set of open Server-Sent Events responses that all get the same messages.
 * Every message is a whole update, so a client whose socket is still full from the last one
 * skips the next instead of queueing it: a slow page cannot grow the server's memory.
 */
export class EventStream {
  private readonly clients = new Set<ServerResponse>();

  /** How many pages are connected. */
  get size(): number {
    return this.clients.size;
  }

  /**
   * Answers `req` as an event stream, sends `first` (if any) at once, and keeps the response for
   * {@link send} until the page goes away.
   */
  open(req: IncomingMessage, res: ServerResponse, first: unknown): void {
    res.writeHead(200, {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-store",
      connection: "keep-alive",
      // Proxies such as nginx would otherwise buffer the stream.
      "x-accel-buffering": "no",
    });
    // Reconnect after 1 s when the connection drops (the browser's default is about 3 s).
    res.write("retry: 1000\n\n");
    if (first !== undefined) res.write(frame(first));
    this.clients.add(res);
    const forget = () => this.clients.delete(res);
    req.once("close", forget);
    res.once("close", forget);
  }

  /** Sends `message` (as JSON) to every connected page that is ready for it. */
  send(message: unknown): void {
    if (this.clients.size === 0) return;
    const text = frame(message);
    for (const res of this.clients) {
      if (res.writableNeedDrain || res.destroyed) continue;
      res.write(text);
    }
  }

  /** Ends every response (the pages see the stream close). */
  closeAll(): void {
    for (const res of this.clients) res.end();
    this.clients.clear();
  }
}

/** One SSE message: JSON.stringify never writes a line break, so one `data:` line holds it all. */
function frame(message: unknown): string {
  return `data: ${JSON.stringify(message)}\n\n`;
}
