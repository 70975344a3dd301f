import type { ServiceDefinition } from "@grpc/grpc-js";

// No jest imports here: worker processes and the gRPC recorder use it.

const bytes = (b: Buffer): Buffer => b;

/**
 * The gRPC service of the tests, without codegen: `/prl.test.Recorder/Record` (unary) and
 * `/prl.test.Recorder/Stream` (server streaming), raw bytes each way.
 */
export const RECORDER_SERVICE = {
  record: {
    path: "/prl.test.Recorder/Record",
    requestStream: false,
    responseStream: false,
    requestSerialize: bytes,
    requestDeserialize: bytes,
    responseSerialize: bytes,
    responseDeserialize: bytes,
    originalName: "record",
  },
  stream: {
    path: "/prl.test.Recorder/Stream",
    requestStream: false,
    responseStream: true,
    requestSerialize: bytes,
    requestDeserialize: bytes,
    responseSerialize: bytes,
    responseDeserialize: bytes,
    originalName: "stream",
  },
} satisfies ServiceDefinition;
