import { parseAutoclaimReply, parseEntryItem, parseFlags, parsePendingCounts, parseReadReply } from "../../src/flow/consumers/redis-stream-replies.js";

// The reply shapes below were captured from Redis 7.0 with ioredis 5.0.0 (RESP2), ioredis 6.0.0
// (RESP3, default replyMapping "legacy") and ioredis 6.0.0 with replyMapping "resp3". The
// integration suites run the source against a real server with the first two; this pins all three.

const entryA = ["1796152484375-0", ["body", '{"n":1}', "x", "y"]];
const entryB = ["1796152484376-0", ["body", '{"n":2}']];
const expected = [
  { kind: "entry", entry: { id: "1796152484375-0", fields: { body: '{"n":1}', x: "y" } } },
  { kind: "entry", entry: { id: "1796152484376-0", fields: { body: '{"n":2}' } } },
];

test("XREADGROUP: RESP2 pairs, RESP3 flattened map, RESP3 object and Map all give the stream's entries", () => {
  const resp2 = [["s", [entryA, entryB]], ["other", [entryA]]];
  const resp3Legacy = ["other", [entryA], "s", [entryA, entryB]];
  const resp3Object = { other: [entryA], s: [entryA, entryB] };
  const resp3Map = new Map<string, unknown>([["s", [entryA, entryB]]]);
  for (const reply of [resp2, resp3Legacy, resp3Object, resp3Map]) expect(parseReadReply(reply, "s")).toEqual(expected);
  // Timeout (nil), no entries, and a stream not in the reply.
  expect(parseReadReply(null, "s")).toEqual([]);
  expect(parseReadReply([["s", []]], "s")).toEqual([]);
  expect(parseReadReply(["s", []], "s")).toEqual([]);
  expect(parseReadReply({ other: [entryA] }, "s")).toEqual([]);
});

test("entries: a deleted entry's [id, nil], Buffer fields and map-shaped fields", () => {
  expect(parseEntryItem(["1-0", null])).toEqual({ kind: "deleted", id: "1-0" });
  expect(parseEntryItem([Buffer.from("1-0"), [Buffer.from("body"), Buffer.from("x")]])).toEqual({ kind: "entry", entry: { id: "1-0", fields: { body: "x" } } });
  expect(parseEntryItem(["1-0", { body: "x" }])).toEqual({ kind: "entry", entry: { id: "1-0", fields: { body: "x" } } });
  expect(parseEntryItem("garbage")).toBeNull();
});

test("XAUTOCLAIM: cursor, entries, and Redis 7's list of deleted ids", () => {
  expect(parseAutoclaimReply(["0-0", [entryB], ["1796152484375-0"]])).toEqual({
    cursor: "0-0",
    items: [expected[1], { kind: "deleted", id: "1796152484375-0" }],
  });
  expect(() => parseAutoclaimReply(null)).toThrow(/XAUTOCLAIM/);
});

test("XPENDING counts and script flags", () => {
  expect([...parsePendingCounts([["1-0", "c1", 100, 1], ["2-0", "c1", 100, 3]])]).toEqual([["1-0", 1], ["2-0", 3]]);
  expect(parseFlags([1, 0, 1], 3)).toEqual([true, false, true]);
  expect(() => parseFlags([1], 2)).toThrow(/script reply/);
});
