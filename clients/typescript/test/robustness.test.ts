/** What keeps the client going when the server, the network or the app misbehave. */

import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";

import { connected, scriptedClient, settle } from "./scripted_socket.js";

beforeEach(() => mock.timers.enable({ apis: ["setTimeout"] }));
afterEach(() => mock.timers.reset());

const publishes = (frames: Record<string, unknown>[]) => frames.filter((f) => f["action"] === "publish").map((f) => f["id"]);

test("a write the server never answers is sent again with its id", async () => {
  const { client, sockets } = scriptedClient({ answerTimeoutMs: 5_000 });
  await connected(client, sockets);
  const socket = sockets[0]!;
  const acked = client.publish("chat:a", 1, { id: "m1" });
  mock.timers.tick(4_999);
  assert.deepEqual(publishes(socket.sent), ["m1"]);
  mock.timers.tick(1);
  assert.deepEqual(publishes(socket.sent), ["m1", "m1"], "no answer in 5 s: the same id again");
  socket.receive({ type: "ack", channel: "chat:a", id: "m1", seq: 1, epoch: "e" });
  assert.equal((await acked).seq, 1);
  mock.timers.tick(10_000);
  assert.deepEqual(publishes(socket.sent), ["m1", "m1"], "acked: nothing more");
});

test("a write that could never be sent is refused at once and not queued", async () => {
  const { client } = scriptedClient();
  await assert.rejects(client.publish("chat:a", "x".repeat(24 * 1024 + 1)), (error: { code: string; message: string }) => {
    assert.equal(error.code, "too_large");
    assert.match(error.message, /24579 bytes serialised; at most 24576/);
    return true;
  });
  await assert.rejects(client.publish("chat:a", { n: 1n }), (error: { code: string }) => error.code === "bad_request");
  await assert.rejects(client.publish("chat:a", undefined), (error: { code: string }) => error.code === "bad_request");
  assert.deepEqual(client.pending(), []);
});

test("token_expired answering a write renews the connection and sends the write again", async () => {
  const { client, sockets } = scriptedClient();
  await connected(client, sockets);
  const acked = client.publish("chat:a", 1, { id: "m1" });
  sockets[0]!.receive({ type: "error", code: "token_expired", channel: "chat:a", id: "m1", message: "expired" });
  await settle();
  const second = sockets[1]!;
  assert.ok(second !== undefined, "a new socket at once");
  second.open();
  assert.deepEqual(publishes(second.sent), ["m1"]);
  second.receive({ type: "ack", channel: "chat:a", id: "m1", seq: 1, epoch: "e" });
  assert.equal((await acked).seq, 1);
});

test("a channel's subscribe and unsubscribe go one at a time, the newest wish last", async () => {
  const { client, sockets } = scriptedClient();
  await connected(client, sockets);
  const socket = sockets[0]!;
  const actions = () => socket.frames().map((f) => f["action"]);
  // Mount, unmount, mount again (React's StrictMode does this).
  const first = client.subscribe("chat:a", { onDelta: () => {} });
  first.unsubscribe();
  client.subscribe("chat:a", { onDelta: () => {} });
  assert.deepEqual(actions(), ["subscribe"], "one in flight");
  socket.answer("subscribe", { type: "subscribed", channel: "chat:a", seq: 0 });
  await settle();
  assert.deepEqual(actions(), ["subscribe", "subscribe"], "then what is wanted now");
  first.unsubscribe(); // a stale handle changes nothing
  await settle();
  assert.deepEqual(actions(), ["subscribe", "subscribe"]);
});

test("a subscription refused for good is reported to its handlers; a throwing callback stops nothing", async () => {
  const thrown: unknown[] = [];
  const { client, sockets } = scriptedClient({ onCallbackError: (error) => thrown.push(error) });
  const errors: string[] = [];
  const got: number[] = [];
  client.subscribe("chat:secret", { onDelta: () => {}, onError: (error) => errors.push(error.code) });
  client.subscribe("chat:a", {
    onDelta: (d) => {
      got.push(d.seq);
      if (d.seq === 1) throw new Error("the app's bug");
    },
  });
  await connected(client, sockets);
  const socket = sockets[0]!;
  const secret = socket.sent.find((f) => f["channel"] === "chat:secret")!;
  socket.receive({ type: "error", code: "forbidden", channel: "chat:secret", id: secret["id"], message: "no" });
  await settle();
  assert.deepEqual(errors, ["forbidden"]);
  socket.answer("subscribe", { type: "subscribed", channel: "chat:a", seq: 0 });
  const d = (seq: number) => ({ type: "delta", channel: "chat:a", seq, epoch: "e", id: `m${seq}`, from: "b", ts: 0, data: seq });
  socket.receive({ type: "deltas", channel: "chat:a", deltas: [d(1), d(2)].map(({ type: _t, ...rest }) => rest) });
  assert.deepEqual(got, [1, 2], "delivery went on past the throw");
  assert.equal((thrown[0] as Error | undefined)?.message, "the app's bug", "the error is still seen");
});

test("a subscription can start from what the app has, and says where it started", async () => {
  const { client, sockets } = scriptedClient();
  const heads: unknown[] = [];
  client.subscribe("chat:a", { onDelta: () => {}, since: 41, epoch: "e", onSubscribed: (head) => heads.push(head) });
  await connected(client, sockets);
  assert.deepEqual(sockets[0]!.frames(), [{ action: "subscribe", channel: "chat:a", since: 41, epoch: "e" }]);
  sockets[0]!.answer("subscribe", { type: "subscribed", channel: "chat:a", seq: 41, epoch: "e", recovered: true });
  assert.deepEqual(heads, [{ type: "subscribed", channel: "chat:a", seq: 41, epoch: "e", recovered: true, id: "q.1" }]);
});

test("close then connect while the token is fetched opens one socket", async () => {
  let release: (token: string) => void = () => {};
  const { client, sockets } = scriptedClient({ token: () => new Promise<string>((resolve) => (release = resolve)) });
  await client.connect();
  client.close();
  await client.connect();
  release("t");
  await settle();
  release("t");
  await settle();
  assert.equal(sockets.length, 1, "the first attempt gave up");
  client.close();
});

test("refused again, a write waits longer each time", async () => {
  const { client, sockets } = scriptedClient({ random: () => 0.99 });
  await connected(client, sockets);
  const socket = sockets[0]!;
  void client.publish("chat:a", 1, { id: "m1" }).catch(() => {});
  const limited = { type: "error", code: "rate_limited", channel: "chat:a", id: "m1", retryAfterMs: 100, message: "" };
  socket.receive(limited);
  mock.timers.tick(100);
  assert.equal(publishes(socket.sent).length, 2, "the first retry after retryAfterMs");
  socket.receive(limited);
  mock.timers.tick(100);
  assert.equal(publishes(socket.sent).length, 2, "refused again: not yet");
  mock.timers.tick(495); // a jittered backoff on top (up to 0.5 s, doubling)
  assert.equal(publishes(socket.sent).length, 3);
  client.close();
});
