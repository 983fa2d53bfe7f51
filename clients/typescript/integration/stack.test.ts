/**
 * The client against the local stack (`integration/run` starts it; `DELTACAST_URL` names
 * it): a reader and a writer whose sockets the test cuts mid-stream, and messages written
 * while the writer is offline; every message arrives once, in order, and every publish is
 * acknowledged once.
 */

import assert from "node:assert/strict";
import { test } from "node:test";

import { type Delta, DeltacastClient } from "../src/index.js";
import { URL, sockets, token, until } from "./support.js";

test("cut sockets and offline writes: every message once, in order, each acked once", { timeout: 60_000 }, async () => {
  const channel = `chat:it-${Date.now().toString(36)}`;
  const readerSockets = sockets();
  const writerSockets = sockets();
  const reader = new DeltacastClient({ url: URL, token: () => token("reader"), socket: readerSockets.factory, backoff: { baseMs: 100, maxMs: 500 } });
  const writer = new DeltacastClient({ url: URL, token: () => token("writer"), socket: writerSockets.factory, backoff: { baseMs: 100, maxMs: 500 } });
  const got: Delta[] = [];
  let subscribed = false;
  reader.subscribe(channel, { onDelta: (delta) => got.push(delta), onSubscribed: () => (subscribed = true) });
  await reader.connect();
  await writer.connect();
  await until(() => subscribed && writer.state === "connected", 10_000, "subscribed and connected");

  const acks: Promise<{ seq: number }>[] = [];
  for (let i = 1; i <= 30; i += 1) {
    acks.push(writer.publish(channel, { n: i }, { id: `m${i}` }));
    if (i === 10) {
      readerSockets.open.at(-1)?.terminate(); // the reader drops mid-stream
    }
    if (i === 15) {
      writerSockets.open.at(-1)?.terminate(); // the writer goes offline: 16-20 wait
    }
    await new Promise((resolve) => setTimeout(resolve, 40));
  }
  const seqs = (await Promise.all(acks)).map((ack) => ack.seq);
  assert.deepEqual([...seqs].sort((a, b) => a - b), Array.from({ length: 30 }, (_, i) => i + 1), "30 distinct seqs");
  await until(() => got.length >= 30, 20_000, "all 30 at the reader");
  await new Promise((resolve) => setTimeout(resolve, 500));
  assert.deepEqual(
    got.map((delta) => delta.seq),
    Array.from({ length: 30 }, (_, i) => i + 1),
    "once each, in order",
  );
  const byId = new Map(got.map((delta) => [delta.id, (delta.data as { n: number }).n]));
  for (let i = 1; i <= 30; i += 1) {
    assert.equal(byId.get(`m${i}`), i);
  }
  assert.equal(writer.pending().length, 0);
  reader.close();
  writer.close();
});
