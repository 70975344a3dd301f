import { MemoryLeaseBackend } from "../../src/lease-backends/memory.js";
import { describeLeaseBackendConformance } from "../../src/testing/conformance.js";
import { VirtualClock } from "../../src/testing/virtual-clock.js";

const clock = new VirtualClock();
const backend = new MemoryLeaseBackend({ clock });

describeLeaseBackendConformance(
  "memory (virtual time)",
  async () => ({
    backend,
    // In-process clients of one "server": the same store, as separate connections would see it.
    newClient: async () => backend,
    ttlMs: 1000,
    wait: (ms) => clock.advance(ms),
    stall: async () => {
      const resume = backend.stall();
      return async () => resume();
    },
    snapshot: async () => {
      const saved = backend.snapshot();
      return async () => backend.restore(saved);
    },
  }),
  async () => {
    await backend.close();
  },
);
