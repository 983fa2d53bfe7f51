/** The order writes are sent in, and requests sent once per connection. */

import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";

import { type ScriptedSocket, connected, reconnect, scriptedClient } from "./scripted_socket.js";

beforeEach(() => mock.timers.enable({ apis: ["setTimeout"] }));
afterEach(() => mock.timers.reset());



const ids = (socket: ScriptedSocket) => socket.sent.filter((f) => f["action"] === "publish").map((f) => f["id"]);

test("a channel's writes go one at a time, in the order they were made; other channels do not wait", async () => {
  const { client, sockets } = scriptedClient();
  // Written offline: sent as a burst they could be stored in any order.
  const acks = [client.publish("chat:a", 1, { id: "a1" }), client.publish("chat:a", 2, { id: "a2" })];
  acks.push(client.publish("chat:b", 3, { id: "b1" }));
  await connected(client, sockets);
  const first = sockets[0]!;
  assert.deepEqual(ids(first), ["a1", "b1"], "the oldest of each channel");
  // The socket drops with a1 unanswered: it goes first again on the next one.
  const second = await reconnect(sockets);
  assert.deepEqual(ids(second), ["a1", "b1"]);
  second.receive({ type: "ack", channel: "chat:a", id: "a1", seq: 1, epoch: "e" });
  assert.deepEqual(ids(second), ["a1", "b1", "a2"], "a2 once a1 is stored");
  // A retryable refusal holds the channel's place until its retry is stored.
  second.receive({ type: "error", code: "rate_limited", channel: "chat:a", id: "a2", retryAfterMs: 500, message: "" });
  const a3 = client.publish("chat:a", 4, { id: "a3" });
  assert.deepEqual(ids(second), ["a1", "b1", "a2"]);
  mock.timers.tick(500);
  assert.deepEqual(ids(second), ["a1", "b1", "a2", "a2"]);
  second.receive({ type: "ack", channel: "chat:a", id: "a2", seq: 2, epoch: "e" });
  second.receive({ type: "ack", channel: "chat:b", id: "b1", seq: 1, epoch: "e" });
  assert.deepEqual(ids(second), ["a1", "b1", "a2", "a2", "a3"]);
  second.receive({ type: "ack", channel: "chat:a", id: "a3", seq: 3, epoch: "e" });
  assert.deepEqual(
    (await Promise.all([...acks, a3])).map((ack) => ack.seq),
    [1, 2, 1, 3],
  );
});

test("with inOrder false a channel's writes go at once", async () => {
  const { client, sockets } = scriptedClient({ inOrder: false });
  await connected(client, sockets);
  const acks = [client.publish("chat:a", 1, { id: "a1" }), client.publish("chat:a", 2, { id: "a2" })];
  assert.deepEqual(ids(sockets[0]!), ["a1", "a2"]);
  client.close();
  // Closing settles what waits: rejected with `closed`, the writes kept for the next client.
  for (const ack of acks) {
    await assert.rejects(ack, (error: { code: string }) => error.code === "closed");
  }
  assert.equal(client.pending().length, 2);
});

test("each request goes once per connection, an enter made offline once", async () => {
  const { client, sockets } = scriptedClient();
  client.watchPresence("chat:a", () => {});
  const entered = client.enter("chat:a", { name: "Ann" }).catch((error: unknown) => error);
  await connected(client, sockets);
  const socket = sockets[0]!;
  socket.answer("subscribe", { type: "subscribed", channel: "chat:a", seq: 0 });
  const count = (action: string) => socket.sent.filter((f) => f["action"] === action).length;
  assert.equal(count("presence"), 1, "the enter");
  assert.equal(count("members"), 1, "the listing");
  assert.equal(count("subscribe"), 1);
  client.close();
  assert.equal(((await entered) as { code: string }).code, "closed", "closing rejects what waits");
});
