/**
 * partitioned-rate-limiter/etcd: the lease backend on etcd through an injected etcd3 client (an
 * optional peer dependency: `npm install etcd3`).
 */
export { EtcdLeaseBackend } from "../lease-backends/etcd.js";
export type { EtcdLeaseBackendOptions } from "../lease-backends/etcd.js";
