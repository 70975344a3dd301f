/**
 * The worked example the Rate Limiting pattern (Azure Architecture Center) opens with, as it is
 * published: an application ingests 10,000 records of 10 RU each into Azure Cosmos DB provisioned
 * with 20,000 RU/s, sending everything at once and resending what was rejected. Each pass writes
 * the 2,000 records one second's capacity allows and gets the rest rejected, so the job sends
 * 30,000 records in five passes and handles 20,000 errors. Rate-limited, it sends each record
 * once: 10,000 sends, no rejection.
 */
export const PUBLISHED_COSMOS = {
  records: 10_000,
  ruPerRecord: 10,
  ruPerSecond: 20_000,
  /** Records sent and rejected in each of the five passes. */
  passes: [
    { sent: 10_000, rejected: 8_000 },
    { sent: 8_000, rejected: 6_000 },
    { sent: 6_000, rejected: 4_000 },
    { sent: 4_000, rejected: 2_000 },
    { sent: 2_000, rejected: 0 },
  ],
  naive: { sent: 30_000, rejected: 20_000 },
  limited: { sent: 10_000, rejected: 0 },
} as const;
