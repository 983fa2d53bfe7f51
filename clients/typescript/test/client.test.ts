import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";

import type { Delta } from "../src/channel_log.js";
import { DeltacastError } from "../src/errors.js";
import { connected, reconnect, scriptedClient, settle } from "./scripted_socket.js";

beforeEach(() => mock.timers.enable({ apis: ["setTimeout"] }));
afterEach(() => mock.timers.reset());


const delta = (seq: number, id = `m${seq}`): Delta => ({
  channel: "chat:a",
  seq,
  epoch: "e1",
  id,
  from: "bob",
  ts: 0,
  data: seq,
});

test("a subscription gets each delta once and in order across a reconnect", async () => {
  const { client, sockets } = scriptedClient();
  const got: number[] = [];
  client.subscribe("chat:a", { onDelta: (d) => got.push(d.seq) });
  await connected(client, sockets);
  const first = sockets[0]!;
  assert.deepEqual(first.frames(), [{ action: "subscribe", channel: "chat:a" }]);
  first.answer("subscribe", { type: "subscribed", channel: "chat:a", seq: 0 });
  first.receive({ type: "delta", ...delta(1) });
  first.receive({ type: "deltas", channel: "chat:a", deltas: [delta(2), delta(3)] });
  first.receive({ type: "delta", ...delta(2) });
  // The socket drops; the next one resubscribes from seq 3 and catches up.
  const second = await reconnect(sockets);
  assert.deepEqual(second.frames(), [{ action: "subscribe", channel: "chat:a", since: 3, epoch: "e1" }]);
  second.receive({ type: "delta", ...delta(5) });
  second.receive({ type: "delta", ...delta(4) });
  second.answer("subscribe", { type: "subscribed", channel: "chat:a", seq: 5, epoch: "e1", recovered: true });
  assert.deepEqual(got, [1, 2, 3, 4, 5]);
});

test("a gap is filled from history", async () => {
  const { client, sockets } = scriptedClient();
  const got: number[] = [];
  client.subscribe("chat:a", { onDelta: (d) => got.push(d.seq) });
  await connected(client, sockets);
  const socket = sockets[0]!;
  socket.answer("subscribe", { type: "subscribed", channel: "chat:a", seq: 0 });
  socket.receive({ type: "delta", ...delta(1) });
  socket.receive({ type: "delta", ...delta(3) });
  assert.deepEqual(socket.frames().at(-1), { action: "history", channel: "chat:a", since: 1, limit: 100 });
  socket.answer("history", { type: "history", channel: "chat:a", seq: 3, epoch: "e1", deltas: [delta(2), delta(3)], more: false });
  await settle();
  assert.deepEqual(got, [1, 2, 3]);
});

test("a message written offline is sent once connected, and again with its id after a drop", async () => {
  const { client, sockets } = scriptedClient();
  // WHEN the app publishes before any connection
  const acked = client.publish("chat:a", { text: "from the tunnel" }, { id: "offline-1" });
  await connected(client, sockets);
  const publish = { action: "publish", channel: "chat:a", id: "offline-1", data: { text: "from the tunnel" } };
  assert.deepEqual(sockets[0]?.sent, [publish]);
  // AND the socket drops before the ack
  sockets[0]?.drop();
  await settle();
  mock.timers.tick(0);
  await settle();
  sockets[1]?.open();
  // THEN the same id goes again, and its ack settles the promise
  assert.deepEqual(sockets[1]?.sent, [publish]);
  sockets[1]?.receive({ type: "ack", channel: "chat:a", id: "offline-1", seq: 7, epoch: "e1" });
  assert.deepEqual(await acked, { channel: "chat:a", id: "offline-1", seq: 7, epoch: "e1" });
  assert.deepEqual(client.pending(), []);
});

test("a conflict settles the publish with the head; rate_limited sends the same id again later", async () => {
  const { client, sockets } = scriptedClient();
  await connected(client, sockets);
  const socket = sockets[0]!;
  const guarded = client.publish("doc:1", "v2", { id: "e1", expectSeq: 1 });
  socket.receive({ type: "error", code: "conflict", channel: "doc:1", id: "e1", seq: 2, epoch: "x", message: "expectSeq is 1, but the channel's head is 2" });
  await assert.rejects(guarded, (error: unknown) => {
    assert.ok(error instanceof DeltacastError);
    assert.equal(error.code, "conflict");
    assert.equal(error.details.seq, 2);
    return true;
  });
  const limited = client.publish("chat:a", "hi", { id: "m1" });
  socket.receive({ type: "error", code: "rate_limited", channel: "chat:a", id: "m1", retryAfterMs: 1500, message: "slow down" });
  assert.equal(socket.sent.filter((f) => f["id"] === "m1").length, 1);
  mock.timers.tick(1500);
  assert.equal(socket.sent.filter((f) => f["id"] === "m1").length, 2, "sent again after retryAfterMs");
  socket.receive({ type: "ack", channel: "chat:a", id: "m1", seq: 1, epoch: "e1" });
  assert.equal((await limited).seq, 1);
});
