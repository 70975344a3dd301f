import { spawnSync } from "node:child_process";
import amqp, { type ChannelModel } from "amqplib";

// No jest imports here.

/** Where the tests find RabbitMQ: `AMQP_URL`, else the machine's broker on 127.0.0.1:5672. */
export const AMQP_URL = process.env.AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672";

/**
 * Connects to RabbitMQ at {@link AMQP_URL}. RabbitMQ is a machine service (tests never stop or
 * reconfigure it); as root with rabbitmq-server installed and no AMQP_URL, a broker that is down
 * is started once with `rabbitmq-server -detached`. A connection-level error is swallowed: the
 * caller sees the connection close instead.
 */
export async function connectRabbit(): Promise<ChannelModel> {
  let connection: ChannelModel;
  try {
    connection = await amqp.connect(AMQP_URL);
  } catch (first) {
    const isRoot = process.getuid?.() === 0;
    if (!isRoot || process.env.AMQP_URL) {
      throw new Error(`RabbitMQ is not reachable at ${AMQP_URL} (${String(first)}). Start it (rabbitmq-server -detached) or set AMQP_URL.`);
    }
    spawnSync("rabbitmq-server", ["-detached"], { stdio: "ignore" });
    const deadline = Date.now() + 40_000;
    for (;;) {
      await new Promise((r) => setTimeout(r, 1000));
      try {
        connection = await amqp.connect(AMQP_URL);
        break;
      } catch (error) {
        if (Date.now() > deadline) throw new Error(`RabbitMQ did not come up at ${AMQP_URL} within 40 s after rabbitmq-server -detached: ${String(error)}`);
      }
    }
  }
  connection.on("error", () => undefined);
  return connection;
}
