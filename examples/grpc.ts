import * as grpc from "@grpc/grpc-js";
import { MemoryLeaseBackend, PartitionedRateLimiter } from "partitioned-rate-limiter";
import { limiterInterceptor, loadSheddingInterceptor } from "partitioned-rate-limiter/grpc";

// Client and server each have their own quota; here both live in one process on memory backends.
const quota = (resource: string) =>
  new PartitionedRateLimiter({ resource, limit: 50, intervalMs: 1000, partitions: 5, backend: new MemoryLeaseBackend(), leaseTtlMs: 2000 });
const clientLimiter = quota("orders-grpc-client");
const serverLimiter = quota("orders-grpc-server");

// A service without codegen (JSON bytes each way); with generated code, use its client and definition.
type Order = { id: number };
const json = { serialize: (order: Order) => Buffer.from(JSON.stringify(order)), deserialize: (bytes: Buffer) => JSON.parse(bytes.toString()) as Order };
const insert = { path: "/shop.Orders/Insert", requestStream: false, responseStream: false, requestSerialize: json.serialize, requestDeserialize: json.deserialize, responseSerialize: json.serialize, responseDeserialize: json.deserialize };

// Server (grpc-js >= 1.10): wait at most 500 ms for admission, else RESOURCE_EXHAUSTED + pushback.
const server = new grpc.Server({ interceptors: [loadSheddingInterceptor({ grpc, limiter: serverLimiter, maxWaitMs: 500 })] });
server.addService({ insert }, { insert: (call: grpc.ServerUnaryCall<Order, Order>, done: grpc.sendUnaryData<Order>) => done(null, call.request) });
const port = await new Promise<number>((resolve, reject) =>
  server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))));

// Client: each call waits for admission; bulk inserts cost 10 units, everything else 1.
const admit = limiterInterceptor({ grpc, limiter: clientLimiter, cost: (method) => (method.endsWith("/BulkInsert") ? 10 : 1) });
const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), { interceptors: [admit] });
const reply = await new Promise<Order>((resolve, reject) =>
  client.makeUnaryRequest(insert.path, json.serialize, json.deserialize, { id: 1 }, (error, value) => (error || !value ? reject(error) : resolve(value))));
console.log(`inserted order ${reply.id}; client admitted ${clientLimiter.stats().admitted}, server ${serverLimiter.stats().admitted}`);

client.close();
server.forceShutdown();
await Promise.all([clientLimiter.close(), serverLimiter.close()]);
