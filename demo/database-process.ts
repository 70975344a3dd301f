/**
 * The demo's database in its own process (started by demo/remote-database.ts), so its arrival
 * times are not delayed by the senders' event loop: argv[2] is `{ limit, intervalMs }`; it sends
 * `{ url }` over IPC once listening and exits when the parent disconnects.
 */
import { startDatabase } from "./database.js";

const quota = JSON.parse(process.argv[2] ?? "{}") as { limit: number; intervalMs: number };
const db = await startDatabase(quota);
process.send?.({ url: db.url });
process.on("disconnect", () => {
  void db.close().finally(() => process.exit(0));
});
