/**
 * partitioned-rate-limiter/zookeeper: the lease backend on ZooKeeper through node-zookeeper-client
 * (an optional peer dependency: `npm install node-zookeeper-client`), whose sessions it opens itself.
 */
export { ZooKeeperLeaseBackend } from "../lease-backends/zookeeper.js";
export type { ZooKeeperLeaseBackendOptions } from "../lease-backends/zookeeper.js";
