import type { Deadline } from "@grpc/grpc-js";

/**
 * deadlineMs is a grpc-js deadline (a Date, ms since the epoch, or Infinity for none) in ms since
 * the epoch. grpc-js itself keeps deadlines on the wall clock, so waits bounded by one are too.
 */
export function deadlineMs(deadline: Deadline | undefined): number {
  if (deadline instanceof Date) return deadline.getTime();
  return typeof deadline === "number" && !Number.isNaN(deadline) ? deadline : Infinity;
}
